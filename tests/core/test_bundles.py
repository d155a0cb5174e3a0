"""A revision's manifests: all valid, or every problem with file, line and field."""

from __future__ import annotations

from bpfleet_core import bundles
from bpfleet_core.resources import BpfProgramSpec

PROGRAM = """\
apiVersion: bpfleet.io/v1alpha1
kind: BpfProgram
metadata:
  name: execs
  labels: {team: platform}
spec:
  artifact: {name: execsnoop, version: "1.0.0"}
  attach:
    - {entryPoint: handle_exec, type: tracepoint}
"""
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.1/8}}]
"""


def test_a_valid_revision_yields_its_documents_and_inventory() -> None:
    bundle = bundles.load({"programs/execs.yaml": PROGRAM, "policies/web.yaml": POLICY})
    assert bundle.valid
    assert [p.name for p in bundle.programs] == ["execs"]
    assert bundle.programs[0].labels == {"team": "platform"}
    assert bundle.programs[0].origin == "programs/execs.yaml:4"
    assert [e.key for e in bundle.inventory()] == [
        "BpfProgram/execs",
        "NetworkPolicy/shop/web",
    ]
    # Host bits are normalised and the user is told, as with kubectl.
    assert str(bundle.policies[0].policy.spec.ingress[0].from_[0].ip_block.cidr) == "10.0.0.0/8"  # type: ignore[index,union-attr]
    assert "10.0.0.0/8" in str(bundle.warnings[0])
    # Policies come before programs when applied.
    assert [type(d).__name__ for d in bundle.documents()] == ["PolicyDocument", "ProgramDocument"]


def test_each_problem_names_file_line_and_field() -> None:
    broken_program = PROGRAM.replace("type: tracepoint", "type: tc")
    broken_yaml = "apiVersion: v1\nkind: [unclosed\n"
    bundle = bundles.load(
        {"a.yaml": broken_program, "b.yaml": broken_yaml, "c.yaml": PROGRAM + "---\n" + POLICY}
    )
    assert not bundle.valid
    found = {(p.file, p.line, p.path) for p in bundle.problems}
    # tc needs interfaces and a direction: reported once at the attach point (line 9), not
    # again as "attach: too short" one level up.
    assert ("a.yaml", 9, "spec.attach[0]") in found
    assert not any(p.path == "spec.attach" for p in bundle.problems)
    assert any(
        p.file == "b.yaml" and p.line == 3 and "invalid YAML" in p.message for p in bundle.problems
    )
    # The valid documents of a bad revision are not offered for applying piecemeal:
    # the caller checks ``valid`` first; they are still parsed so every problem shows.
    assert len(bundle.problems) == 2


def test_unknown_kinds_duplicates_and_non_mappings_are_refused() -> None:
    other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
    bundle = bundles.load(
        {"a.yaml": PROGRAM, "b.yaml": PROGRAM, "c.yaml": other, "d.yaml": "- just\n- a list\n"}
    )
    messages = [str(p) for p in bundle.problems]
    assert any(
        "b.yaml:4: metadata.name: BpfProgram/execs is also defined at a.yaml:4" in m
        for m in messages
    )
    assert any(
        m.startswith("c.yaml:2: kind: 'Deployment' of apiVersion 'apps/v1' is not one of")
        for m in messages
    )
    assert any(m.startswith("d.yaml:1: a manifest must be a mapping") for m in messages)


def test_fleet_checks_are_located_in_the_spec() -> None:
    seen: list[str] = []

    def check(name: str, spec: BpfProgramSpec) -> list[str]:
        seen.append(name)
        return ["attach.0.entryPoint: no entry point handle_exec in execsnoop@9.9.9", "unsigned"]

    bundle = bundles.load({"p.yaml": PROGRAM}, check)
    assert seen == ["execs"]
    assert [(p.line, p.path) for p in bundle.problems] == [
        (9, "spec.attach[0].entryPoint"),
        (6, "spec"),
    ]


def test_manifest_files_are_yaml_under_the_root() -> None:
    paths = ["programs/a.yaml", "programs/b.yml", "programs/README.md", "other/c.yaml", "d.yaml"]
    assert bundles.manifest_files(paths, "programs") == ["programs/a.yaml", "programs/b.yml"]
    assert bundles.manifest_files(paths, ".") == [
        "d.yaml",
        "other/c.yaml",
        "programs/a.yaml",
        "programs/b.yml",
    ]
