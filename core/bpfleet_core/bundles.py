"""One revision's manifests, every one validated before any is applied.

``load(files)`` takes the content of each manifest file at one revision (path -> text or
bytes, read within ``yamlfiles`` limits over the whole revision) and
returns a ``Bundle``: the ``BpfProgram`` and ``NetworkPolicy`` documents it declares,
or every problem found, each located by file, line and field. A bundle with problems
is never applied, not even its valid part: a revision goes in whole or not at all.

Checks that need the fleet (the artifact a program names exists, is signed, and fits
the spec) are passed in as ``check_program``, so this module stays pure and the same
function serves the operator, the standalone pipeline and ``bpfleet validate``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bpfleet_core import yamlfiles
from bpfleet_core.netpol import models as netpol
from bpfleet_core.netpol import validating
from bpfleet_core.netpol.validating import Loc, Problem, SourceDocument
from bpfleet_core.resources import GROUP_VERSION, BpfProgram, BpfProgramSpec, InventoryEntry

MANIFEST_SUFFIXES = (".yaml", ".yml")

# A program check returns problems as "<field path>: <reason>" (the field path relative
# to the spec, dotted as the fleet API writes it) or as a plain reason.
ProgramCheck = Callable[[str, BpfProgramSpec], list[str]]

_PROBLEM_PATH = re.compile(r"^([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*): (.+)$", re.DOTALL)


@dataclass(frozen=True)
class ProgramDocument:
    name: str
    spec: BpfProgramSpec
    labels: Mapping[str, str]
    origin: str  # "file:line" of metadata.name

    @property
    def entry(self) -> InventoryEntry:
        return InventoryEntry(kind="BpfProgram", name=self.name)


@dataclass(frozen=True)
class PolicyDocument:
    policy: netpol.Policy
    origin: str

    @property
    def entry(self) -> InventoryEntry:
        meta = self.policy.metadata
        return InventoryEntry(kind="NetworkPolicy", name=meta.name, namespace=meta.namespace)


@dataclass(frozen=True)
class Bundle:
    programs: tuple[ProgramDocument, ...] = ()
    policies: tuple[PolicyDocument, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    files: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.problems

    def documents(self) -> tuple[ProgramDocument | PolicyDocument, ...]:
        """Policies first: a program that opens a port should not come before its policy."""
        return (*self.policies, *self.programs)

    def inventory(self) -> tuple[InventoryEntry, ...]:
        entries = [item.entry for item in self.programs] + [item.entry for item in self.policies]
        return tuple(sorted(entries, key=lambda entry: entry.key))


def is_manifest(path: str) -> bool:
    """A YAML file, but not a flow-test file (``*.flows.yaml``: tests beside a policy)."""
    return path.endswith(MANIFEST_SUFFIXES) and not path.endswith(validating.FLOW_TEST_SUFFIXES)


def manifest_files(paths: list[str], root: str = ".") -> list[str]:
    """The manifest files among repository paths, under ``root``, sorted."""
    prefix = "" if root in ("", ".") else root.strip("/") + "/"
    return sorted(path for path in paths if path.startswith(prefix) and is_manifest(path))


def load(
    files: Mapping[str, str | bytes],
    check_program: ProgramCheck | None = None,
    limits: yamlfiles.Limits = yamlfiles.LIMITS,
) -> Bundle:
    """Parse and validate every document of every file; see the module docstring."""
    budget = yamlfiles.Budget(limits)  # one for the revision: its files add up
    programs: list[ProgramDocument] = []
    policies: list[PolicyDocument] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for file in sorted(files):
        try:
            sources = validating.parse_yaml(files[file], file, budget)
        except validating.PolicyValidationError as error:
            problems.extend(error.problems)
            continue
        for source in sources:
            found = _load_document(source, check_program)
            if isinstance(found, list):
                problems.extend(found)
            elif isinstance(found, ProgramDocument):
                programs.append(found)
            else:
                document, document_warnings = found
                policies.append(document)
                warnings.extend(document_warnings)
    problems.extend(_duplicates([*programs, *policies]))
    return Bundle(
        programs=tuple(programs),
        policies=tuple(policies),
        problems=tuple(problems),
        warnings=tuple(warnings),
        files=tuple(sorted(files)),
    )


def _load_document(
    source: SourceDocument, check_program: ProgramCheck | None
) -> list[Problem] | ProgramDocument | tuple[PolicyDocument, tuple[Problem, ...]]:
    content = source.content
    if not isinstance(content, Mapping):
        return [source.locate(Problem((), "a manifest must be a mapping"))]
    api_version, kind = content.get("apiVersion"), content.get("kind")
    if kind == "NetworkPolicy" and api_version in validating.API_VERSIONS:
        try:
            validated = validating.validate_source(source)
        except validating.PolicyValidationError as error:
            return error.problems
        return PolicyDocument(validated.policy, _origin(source)), validated.warnings
    if kind == "BpfProgram" and api_version == GROUP_VERSION:
        return _load_program(source, content, check_program)
    supported = (
        f"BpfProgram ({GROUP_VERSION}), NetworkPolicy ({', '.join(validating.API_VERSIONS)})"
    )
    return [
        source.locate(
            Problem(("kind",), f"{kind!r} of apiVersion {api_version!r} is not one of {supported}")
        )
    ]


def _load_program(
    source: SourceDocument, content: Mapping[str, Any], check_program: ProgramCheck | None
) -> list[Problem] | ProgramDocument:
    try:
        program = BpfProgram.model_validate(dict(content))
    except ValidationError as error:
        found = [
            Problem(
                tuple(part for part in item["loc"] if part != "[key]"),
                item["msg"].removeprefix("Value error, "),
            )
            for item in error.errors()
        ]
        # A list whose only item failed is reported "too short" too: keep the deeper one.
        return [
            source.locate(problem)
            for problem in found
            if not any(
                other.loc[: len(problem.loc)] == problem.loc and other.loc != problem.loc
                for other in found
            )
        ]
    if check_program is not None:
        refused = check_program(program.metadata.name, program.spec)
        if refused:
            return [source.locate(_spec_problem(text)) for text in refused]
    return ProgramDocument(
        program.metadata.name,
        program.spec,
        dict(program.metadata.labels),
        _origin(source),
    )


def _origin(source: SourceDocument) -> str:
    """Where the document names itself: what a person looks for first."""
    return f"{source.file}:{source.line_of(('metadata', 'name'))}"


def _spec_problem(text: str) -> Problem:
    """A fleet check's "field.path: reason" as a problem at ``spec.field.path``."""
    match = _PROBLEM_PATH.match(text)
    if match is None:
        return Problem(("spec",), text)
    loc: Loc = ("spec", *(int(part) if part.isdigit() else part for part in match[1].split(".")))
    return Problem(loc, match[2])


def _duplicates(documents: list[ProgramDocument | PolicyDocument]) -> list[Problem]:
    first: dict[str, str] = {}
    problems = []
    for document in documents:
        key = document.entry.key
        if key in first:
            file, _, line = document.origin.rpartition(":")
            problems.append(
                Problem(
                    ("metadata", "name"),
                    f"{key} is also defined at {first[key]}",
                    file=file,
                    line=int(line),
                )
            )
        else:
            first[key] = document.origin
    return problems
