"""Every lint on a policy it applies to and on one it does not; each claim checked again
by the simulator on the proof's own flow, and each fix applied and re-linted."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from bpfleet_core.netpol import editing, linting, locating, models, simulating, validating
from tests.core.netpol import shared

HEADER = """\
apiVersion: {api_version}
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
"""


def source(
    spec: str,
    *,
    name: str = "p",
    namespace: str = "x",
    api_version: str = "networking.k8s.io/v1",
) -> locating.LocatedDocument:
    text = HEADER.format(api_version=api_version, name=name, namespace=namespace)
    text += textwrap.indent(textwrap.dedent(spec), "  ")
    located = locating.parse(text)
    assert not located.problems, located.problems
    return located.documents[0]


def lints(
    document: locating.LocatedDocument,
    topology: models.Topology,
    *,
    others: list[models.Policy] | None = None,
    live: bool = True,
) -> tuple[models.Policy, list[linting.Lint]]:
    policy = validating.validate(document.content).policy
    found = linting.lint(policy, topology, others=others or [], source=document, live=live)
    return policy, found


def only(found: list[linting.Lint], code: str) -> linting.Lint:
    matching = [item for item in found if item.code == code]
    assert len(matching) == 1, [str(item) for item in found]
    return matching[0]


def codes(found: list[linting.Lint]) -> set[str]:
    return {item.code for item in found}


def verify(
    item: linting.Lint,
    policy: models.Policy,
    topology: models.Topology,
    others: list[models.Policy] | None = None,
) -> simulating.Explanation:
    """The simulator, asked again about the proof's flow, gives the proof's verdict."""
    proof = item.proof
    world = linting.with_witnesses(topology, proof.witnesses)
    policies = [policy] if proof.judged_with == "policy" else [policy, *(others or [])]
    again = simulating.explain(
        policies, world, proof.client, proof.server, proof.protocol, proof.port
    )
    verdict = again.allowed if policy.mode == "enforce" else again.audit_allowed
    assert verdict == proof.allowed, (str(item), again.lines())
    assert again.to_dict() == proof.explanation.to_dict()
    return again


def fixed(
    item: linting.Lint, document: locating.LocatedDocument, which: int = 0
) -> tuple[dict[str, Any], models.Policy]:
    edited = editing.apply_edits(document.content, item.fixes[which].edits)
    return edited, validating.validate(edited).policy


def flow_after(
    item: linting.Lint,
    policy: models.Policy,
    topology: models.Topology,
    others: list[models.Policy] | None = None,
) -> bool:
    proof = item.proof
    world = linting.with_witnesses(topology, proof.witnesses)
    policies = [policy] if proof.judged_with == "policy" else [policy, *(others or [])]
    return simulating.allowed(
        policies, world, proof.client, proof.server, proof.protocol, proof.port
    )


def relint(
    edited: dict[str, Any], topology: models.Topology, others: list[models.Policy] | None = None
) -> set[str]:
    policy = validating.validate(edited).policy
    return codes(linting.lint(policy, topology, others=others or []))


@pytest.fixture
def with_dns(topology: models.Topology) -> models.Topology:
    """The standard topology plus CoreDNS in kube-system."""
    pods = dict(topology.pods)
    pods["kube-system/coredns"] = models.Pod(
        labels={"k8s-app": "kube-dns"},
        ip="10.0.9.10",
        ports=(
            models.ContainerPort(name="dns", port=53, protocol="UDP"),
            models.ContainerPort(name="dns-tcp", port=53, protocol="TCP"),
        ),
    )
    namespaces = {
        **topology.namespaces,
        "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    }
    return models.Topology.model_validate(
        {"namespaces": namespaces, "pods": {k: v.model_dump() for k, v in pods.items()}}
    )


# --- split-peer ----------------------------------------------------------------------------

SPLIT_PEER = """\
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: y}}
  - podSelector: {matchLabels: {pod: b}}
"""


def test_split_peer_proves_the_or_and_its_fix_makes_an_and(topology: models.Topology) -> None:
    document = source(SPLIT_PEER)
    policy, found = lints(document, topology)
    item = only(found, "split-peer")
    assert (item.line, item.path, item.severity) == (7, "spec.ingress[0].from", "warning")
    assert item.span is not None
    assert item.span.column == 5
    explanation = verify(item, policy, topology)
    proof = item.proof
    # The client is in namespace y without pod=b: let in only because the peers are ORed.
    assert proof.allowed
    assert proof.server == "x/a"
    assert topology.namespace_of(proof.client) == "y"
    assert topology.pods[proof.client].labels["pod"] != "b"
    assert [str(ref) for ref in explanation.ingress.allowed_by] == ["x/p ingress rule 0"]
    assert not proof.witnesses
    edited, after = fixed(item, document)
    assert edited["spec"]["ingress"][0]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"ns": "y"}},
            "podSelector": {"matchLabels": {"pod": "b"}},
        }
    ]
    assert proof.allowed_once_fixed is False
    assert not flow_after(item, after, topology)
    assert simulating.allowed([after], topology, "y/b", "x/a", "TCP", 80)
    assert "split-peer" not in relint(edited, topology)


def test_split_peer_on_egress_with_a_made_up_namespace(topology: models.Topology) -> None:
    document = source(
        """\
        podSelector: {matchLabels: {pod: a}}
        policyTypes: [Egress]
        egress:
        - to:
          - podSelector: {matchLabels: {pod: b}}
          - namespaceSelector: {matchLabels: {team: payments}}
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "split-peer")
    verify(item, policy, topology)
    # No namespace is labelled team=payments: the proof makes one up, and says so.
    [witness] = item.proof.witnesses
    assert witness.namespace_labels == {"team": "payments"}
    assert item.proof.client == "x/a"
    assert item.proof.server == witness.name
    assert item.proof.allowed
    assert item.proof.allowed_once_fixed is False


def test_one_peer_with_both_selectors_is_not_split(topology: models.Topology) -> None:
    _, found = lints(
        source(
            """\
            podSelector: {matchLabels: {pod: a}}
            ingress:
            - from:
              - namespaceSelector: {matchLabels: {ns: y}}
                podSelector: {matchLabels: {pod: b}}
            """
        ),
        topology,
    )
    assert "split-peer" not in codes(found)


# --- split-ports ---------------------------------------------------------------------------

SPLIT_PORTS = """\
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
- ports:
  - port: 80
"""


def test_split_ports_opens_the_port_to_everyone(topology: models.Topology) -> None:
    document = source(SPLIT_PORTS)
    policy, found = lints(document, topology)
    item = only(found, "split-ports")
    assert (item.line, item.path) == (9, "spec.ingress[1].ports")
    explanation = verify(item, policy, topology)
    assert item.proof.client == linting.OUTSIDE[0]  # an address outside the fleet
    assert (item.proof.protocol, item.proof.port) == ("TCP", 80)
    assert [str(ref) for ref in explanation.ingress.allowed_by] == ["x/p ingress rule 1"]
    # And rule 0 alone lets x/b in on any port (81 too).
    assert simulating.allowed([policy], topology, "x/b", "x/a", "TCP", 81)
    edited, after = fixed(item, document)
    assert edited["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}
    ]
    assert not flow_after(item, after, topology)
    assert simulating.allowed([after], topology, "x/b", "x/a", "TCP", 80)
    assert not simulating.allowed([after], topology, "x/b", "x/a", "TCP", 81)
    assert "split-ports" not in relint(edited, topology)


def test_a_ports_rule_without_a_peers_rule_beside_it_is_not_split(
    topology: models.Topology,
) -> None:
    _, found = lints(
        source(
            """\
            podSelector: {matchLabels: {pod: a}}
            ingress:
            - ports: [{port: 80}]
            - from: [{podSelector: {matchLabels: {pod: b}}}]
              ports: [{port: 81}]
            """
        ),
        topology,
    )
    assert "split-ports" not in codes(found)


def test_split_ports_in_an_audit_policy_is_judged_as_audit_would(
    topology: models.Topology,
) -> None:
    document = source(SPLIT_PORTS + "mode: audit\n", api_version="bpfleet.io/v1alpha1")
    policy, found = lints(document, topology)
    item = only(found, "split-ports")
    verify(item, policy, topology)


# --- egress-without-dns ---------------------------------------------------------------------

EGRESS_TO_B = """\
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to: [{podSelector: {matchLabels: {pod: b}}}]
"""


def test_egress_without_dns_names_the_dns_server_and_fixes_it(
    with_dns: models.Topology,
) -> None:
    document = source(EGRESS_TO_B)
    policy, found = lints(document, with_dns)
    item = only(found, "egress-without-dns")
    assert (item.line, item.path) == (6, "spec.policyTypes")
    explanation = verify(item, policy, with_dns)
    assert (item.proof.client, item.proof.server) == ("x/a", "kube-system/coredns")
    assert (item.proof.protocol, item.proof.port) == ("UDP", 53)
    assert not explanation.egress.allowed
    edited, after = fixed(item, document)
    assert edited["spec"]["egress"][1]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert item.proof.allowed_once_fixed is True
    assert flow_after(item, after, with_dns)
    assert simulating.allowed([after], with_dns, "x/a", "kube-system/coredns", "TCP", 53)
    assert "egress-without-dns" not in relint(edited, with_dns)


def test_dns_allowed_by_another_policy_in_force_is_no_lint(with_dns: models.Topology) -> None:
    allow_dns = validating.validate(
        shared.policy(
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}],
            },
        )
    ).policy
    _, found = lints(source(EGRESS_TO_B), with_dns, others=[allow_dns])
    assert "egress-without-dns" not in codes(found)
    _, found = lints(source(EGRESS_TO_B), with_dns)
    assert "egress-without-dns" in codes(found)


def test_egress_without_dns_where_the_fleet_runs_no_dns_server(
    topology: models.Topology,
) -> None:
    policy, found = lints(source(EGRESS_TO_B), topology)
    item = only(found, "egress-without-dns")
    verify(item, policy, topology)
    assert item.proof.server == "10.96.0.10"
    assert item.fixes[0].edits[0].value == {
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    }
    # A rule sending port 53 to the site's resolver counts as DNS.
    _, found = lints(
        source(
            EGRESS_TO_B
            + "- to: [{ipBlock: {cidr: 192.0.2.53/32}}]\n  ports: [{protocol: UDP, port: 53}]\n"
        ),
        topology,
    )
    assert "egress-without-dns" not in codes(found)


# --- own-namespace-peer ---------------------------------------------------------------------


@pytest.fixture
def with_web(topology: models.Topology) -> models.Topology:
    """The standard topology plus namespace w holding w/web (app=web)."""
    document = topology.model_dump(mode="json")
    document["namespaces"]["w"] = {}
    document["pods"]["w/web"] = {"labels": {"app": "web"}, "ip": "10.0.7.1"}
    return models.Topology.model_validate(document)


OWN_NAMESPACE = """\
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {app: web}}
"""


def test_a_pod_selector_peer_looks_only_in_its_own_namespace(with_web: models.Topology) -> None:
    document = source(OWN_NAMESPACE)
    policy, found = lints(document, with_web)
    item = only(found, "own-namespace-peer")
    assert (item.line, item.path) == (8, "spec.ingress[0].from[0].podSelector")
    explanation = verify(item, policy, with_web)
    assert (item.proof.client, item.proof.server, item.proof.allowed) == ("w/web", "x/a", False)
    assert explanation.ingress.isolating == ("x/p",)
    edited, after = fixed(item, document)
    assert edited["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "w"}
    }
    assert flow_after(item, after, with_web)
    assert "own-namespace-peer" not in relint(edited, with_web)


def test_own_namespace_peer_needs_the_live_topology_and_no_match_at_home(
    with_web: models.Topology,
) -> None:
    _, found = lints(source(OWN_NAMESPACE), with_web, live=False)
    assert "own-namespace-peer" not in codes(found)
    home = with_web.with_labels(podlabels={"x/b": {"app": "web"}})
    _, found = lints(source(OWN_NAMESPACE), home)
    assert "own-namespace-peer" not in codes(found)


# --- empty-pod-selector ----------------------------------------------------------------------


def test_an_empty_pod_selector_selects_the_whole_namespace(topology: models.Topology) -> None:
    document = source(
        """\
        podSelector: {}
        ingress:
        - from: [{podSelector: {matchLabels: {pod: b}}}]
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "empty-pod-selector")
    assert (item.severity, item.line, item.path) == ("info", 5, "spec.podSelector")
    assert "3 now" in item.message
    explanation = verify(item, policy, topology)
    assert topology.namespace_of(item.proof.server) == "x"
    assert not item.proof.allowed
    assert explanation.ingress.isolating == ("x/p",)
    _, found = lints(source("podSelector: {matchLabels: {pod: a}}\n"), topology)
    assert "empty-pod-selector" not in codes(found)


# --- allow-all-rule --------------------------------------------------------------------------


def test_an_empty_rule_lets_in_addresses_outside_the_fleet(topology: models.Topology) -> None:
    document = source(
        """\
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - {}
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "allow-all-rule")
    assert (item.line, item.path) == (7, "spec.ingress[0]")
    explanation = verify(item, policy, topology)
    assert item.proof.client in linting.OUTSIDE
    assert item.proof.allowed
    assert [str(ref) for ref in explanation.ingress.allowed_by] == ["x/p ingress rule 0"]
    edited, after = fixed(item, document)
    assert not flow_after(item, after, topology)
    assert simulating.allowed([after], topology, "z/c", "x/a", "UDP", 81)  # the fleet still is
    assert "allow-all-rule" not in relint(edited, topology)


def test_a_rule_with_ports_or_peers_is_not_allow_all(topology: models.Topology) -> None:
    _, found = lints(
        source(
            """\
            podSelector: {matchLabels: {pod: a}}
            ingress:
            - ports: [{port: 80}]
            - from: [{namespaceSelector: {}}]
            """
        ),
        topology,
    )
    assert "allow-all-rule" not in codes(found)


# --- host-bits-cidr --------------------------------------------------------------------------


def test_a_cidr_with_host_bits_acts_as_its_network(topology: models.Topology) -> None:
    document = source(
        """\
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{ipBlock: {cidr: 10.0.2.3/24}}]
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "host-bits-cidr")
    assert item.path == "spec.ingress[0].from[0].ipBlock.cidr"
    assert item.span is not None
    assert (item.span.line, item.span.column) == (7, 23)
    assert "acts as 10.0.2.0/24" in item.message
    verify(item, policy, topology)
    # A pod of 10.0.2.0/24 other than 10.0.2.3 (which is y/c) is let in.
    assert item.proof.client in ("y/a", "y/b")
    assert item.proof.allowed
    [canonical, host] = item.fixes
    edited, after = fixed(item, document, 0)
    assert edited["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] == "10.0.2.0/24"
    assert flow_after(item, after, topology)  # the same meaning, written plainly
    assert "host-bits-cidr" not in relint(edited, topology)
    edited, after = fixed(item, document, 1)
    assert edited["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] == "10.0.2.3/32"
    assert not flow_after(item, after, topology)
    assert simulating.allowed([after], topology, "y/c", "x/a", "TCP", 80)
    assert item.proof.allowed_once_fixed is False
    assert canonical.title.startswith("Write 10.0.2.0/24")
    assert host.title.startswith("Only 10.0.2.3")


def test_an_except_with_host_bits_excepts_its_whole_network(topology: models.Topology) -> None:
    document = source(
        """\
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.3/24]}}]
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "host-bits-cidr")
    assert item.path == "spec.ingress[0].from[0].ipBlock.except[0]"
    verify(item, policy, topology)
    assert not item.proof.allowed
    assert item.proof.client in ("y/a", "y/b")


def test_stored_policies_are_normalised_and_raise_no_cidr_lint(
    topology: models.Topology,
) -> None:
    policy = validating.validate(
        shared.policy(
            "p",
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.3/24"}}]}]},
        )
    ).policy
    assert "host-bits-cidr" not in codes(linting.lint(policy, topology))


# --- selects-nothing ------------------------------------------------------------------------


def test_a_policy_selecting_nothing_says_why(topology: models.Topology) -> None:
    policy, found = lints(source("podSelector: {matchLabels: {pod: zz}}\n"), topology)
    item = only(found, "selects-nothing")
    assert "namespace x has 3 endpoint(s), none with pod=zz" in item.message
    explanation = verify(item, policy, topology)
    assert "x/p" not in explanation.ingress.isolating
    assert item.proof.allowed
    # A namespace without endpoints, whose labels match elsewhere.
    policy, found = lints(source("podSelector: {matchLabels: {pod: a}}\n", namespace="q"), topology)
    item = only(found, "selects-nothing")
    assert "has pod=a but a policy selects only in its own namespace" in item.message
    verify(item, policy, topology)
    # Not judged on a made-up topology, and not when something is selected.
    _, found = lints(source("podSelector: {matchLabels: {pod: zz}}\n"), topology, live=False)
    assert "selects-nothing" not in codes(found)
    _, found = lints(source("podSelector: {matchLabels: {pod: a}}\n"), topology)
    assert "selects-nothing" not in codes(found)


def test_a_node_selector_can_select_nothing_too() -> None:
    document = shared.standard_topology().model_dump(mode="json")
    document["nodes"] = {"n1": {"zone": "a"}}
    for pod in document["pods"].values():
        pod["node"] = "n1"
    topology = models.Topology.model_validate(document)
    policy, found = lints(
        source(
            "podSelector: {matchLabels: {pod: a}}\nnodeSelector: {matchLabels: {zone: b}}\n",
            api_version="bpfleet.io/v1alpha1",
        ),
        topology,
    )
    item = only(found, "selects-nothing")
    assert "none is on a node the nodeSelector matches" in item.message
    verify(item, policy, topology)


# --- deny-all-egress ---------------------------------------------------------------------------


def test_egress_in_policy_types_without_rules_denies_all_egress(
    topology: models.Topology,
) -> None:
    document = source(
        """\
        podSelector: {matchLabels: {pod: a}}
        policyTypes: [Ingress, Egress]
        ingress:
        - from: [{podSelector: {matchLabels: {pod: b}}}]
        """
    )
    policy, found = lints(document, topology)
    item = only(found, "deny-all-egress")
    assert (item.severity, item.path, item.line) == ("warning", "spec.policyTypes", 6)
    explanation = verify(item, policy, topology)
    assert not explanation.egress.allowed
    assert item.proof.client == "x/a"
    edited, after = fixed(item, document)
    assert edited["spec"]["policyTypes"] == ["Ingress"]
    assert flow_after(item, after, topology)
    assert "deny-all-egress" not in relint(edited, topology)


def test_a_default_deny_egress_policy_is_told_plainly(topology: models.Topology) -> None:
    policy, found = lints(source("podSelector: {}\npolicyTypes: [Egress]\n"), topology)
    item = only(found, "deny-all-egress")
    assert item.severity == "info"
    assert item.fixes == ()
    verify(item, policy, topology)
    # Another policy in force letting the endpoints out: nothing is denied, no lint.
    open_egress = validating.validate(
        shared.policy("out", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})
    ).policy
    _, found = lints(
        source("podSelector: {}\npolicyTypes: [Egress]\n"), topology, others=[open_egress]
    )
    assert "deny-all-egress" not in codes(found)


# --- the set as a whole ------------------------------------------------------------------------


def test_a_careful_policy_raises_nothing(with_dns: models.Topology) -> None:
    _, found = lints(
        source(
            """\
            podSelector: {matchLabels: {pod: a}}
            policyTypes: [Ingress, Egress]
            ingress:
            - from:
              - namespaceSelector: {matchLabels: {ns: y}}
                podSelector: {matchLabels: {pod: b}}
              ports: [{port: 80}]
            egress:
            - to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
              ports: [{protocol: UDP, port: 53}]
            """
        ),
        with_dns,
    )
    assert found == []


def test_codes_are_stable_and_described() -> None:
    assert len(set(linting.CODES)) == len(linting.CODES) == len(linting.CHECKS)
    for code in linting.CODES:
        assert f"``{code}``" in (linting.__doc__ or "")


def test_lints_serialise_with_position_fix_and_proof(topology: models.Topology) -> None:
    _, found = lints(source(SPLIT_PORTS), topology)
    document = only(found, "split-ports").to_dict()
    assert document["line"] == 9
    assert document["pathText"] == "spec.ingress[1].ports"
    assert document["fixes"][0]["edits"][1] == {
        "op": "remove",
        "path": ["spec", "ingress", 1],
        "pathText": "spec.ingress[1]",
    }
    assert document["proof"]["verdict"] == "allow"
    assert document["proof"]["verdictOnceFixed"] == "deny"
    assert document["proof"]["explanation"]["ingress"]["allowedBy"] == ["x/p ingress rule 1"]


# --- edits ------------------------------------------------------------------------------------


def test_edits_add_replace_and_remove_in_order() -> None:
    document = {"spec": {"egress": [{"to": []}], "policyTypes": ["Ingress", "Egress"]}}
    edited = editing.apply_edits(
        document,
        [
            editing.Edit("add", ("spec", "egress", 1), {"ports": [{"port": 53}]}),
            editing.Edit("replace", ("spec", "policyTypes"), ["Egress"]),
            editing.Edit("remove", ("spec", "egress", 0)),
            editing.Edit("add", ("spec", "podSelector"), {}),
        ],
    )
    assert edited == {
        "spec": {
            "egress": [{"ports": [{"port": 53}]}],
            "policyTypes": ["Egress"],
            "podSelector": {},
        }
    }
    assert document["spec"]["egress"] == [{"to": []}]  # the original is untouched


@pytest.mark.parametrize(
    "edit",
    [
        editing.Edit("replace", ("spec", "ingress"), []),
        editing.Edit("remove", ("spec", "egress", 5)),
        editing.Edit("add", ("spec", "egress", 3), {}),
        editing.Edit("add", ("spec", "nope", "deeper"), {}),
        editing.Edit("add", (), {}),
    ],
)
def test_edits_that_do_not_fit_are_refused(edit: editing.Edit) -> None:
    with pytest.raises(editing.EditError):
        editing.apply_edits({"spec": {"egress": [{}]}}, [edit])


def test_a_policy_gets_a_bounded_number_of_lints_of_one_code(
    topology: models.Topology,
) -> None:
    peers = "".join(
        f"  - ipBlock: {{cidr: 10.{index // 250}.{index % 250}.7/24}}\n" for index in range(5000)
    )
    policy, found = lints(
        source("podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n" + peers), topology
    )
    assert [item.code for item in found] == ["host-bits-cidr"] * linting.MAX_PER_CODE
    assert [item.line for item in found] == sorted(item.line or 0 for item in found)
    verify(found[-1], policy, topology)
