"""What the CI commands (validate, preflight, diff) found, in the formats CI systems read.

- ``github``: workflow commands, one per finding
  (``::error file=F,line=L,title=T::message``), which the runner turns into annotations
  on the pull request's files. Messages escape ``%``, CR and LF; properties also ``:``
  and ``,``.
- ``gitlab``: a Code Quality report, a JSON array of issues with ``description``,
  ``check_name``, ``fingerprint``, ``severity`` and ``location.path`` /
  ``location.lines.begin``, for ``artifacts:reports:codequality``.
- JUnit XML (``--junit FILE``): one test case per program, policy or file checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import typer

from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_core import files

Severity = Literal["error", "warning", "notice"]
_GITLAB_SEVERITY = {"error": "major", "warning": "minor", "notice": "info"}


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"
    GITLAB = "gitlab"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    title: str = ""


@dataclass
class Case:
    """One thing checked: a program, a policy, a manifest file."""

    name: str
    file: str | None = None
    line: int | None = None
    findings: list[Finding] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # what the command said about it

    @property
    def failed(self) -> bool:
        return any(finding.severity == "error" for finding in self.findings)


@dataclass
class Report:
    check: str  # the command: "validate", "preflight", "diff"
    cases: list[Case] = field(default_factory=list)
    fallback_path: str = "."  # where GitLab points findings that name no file

    def findings(self) -> list[Finding]:
        return [finding for case in self.cases for finding in case.findings]


# -- GitHub


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_commands(report: Report) -> list[str]:
    lines = []
    for finding in report.findings():
        properties = []
        if finding.file:
            properties.append(f"file={_escape_property(finding.file)}")
            if finding.line is not None:
                properties.append(f"line={finding.line}")
        properties.append(f"title={_escape_property(finding.title or 'bpfleet ' + report.check)}")
        lines.append(
            f"::{finding.severity} {','.join(properties)}::{_escape_data(finding.message)}"
        )
    return lines


# -- GitLab


def gitlab_code_quality(report: Report) -> list[dict[str, Any]]:
    issues = []
    for finding in report.findings():
        path = finding.file or report.fallback_path
        line = finding.line if finding.line is not None else 1
        check = f"bpfleet/{report.check}"
        identity = "\0".join((check, path, str(line), finding.title, finding.message))
        issues.append(
            {
                "description": finding.message,
                "check_name": f"{check}/{finding.title}" if finding.title else check,
                "fingerprint": hashlib.sha256(identity.encode()).hexdigest()[:32],
                "severity": _GITLAB_SEVERITY[finding.severity],
                "location": {"path": path, "lines": {"begin": line}},
            }
        )
    return issues


# -- JUnit


def junit_xml(report: Report) -> bytes:
    name = f"bpfleet {report.check}"
    failed = sum(1 for case in report.cases if case.failed)
    counts = {"tests": str(len(report.cases)), "failures": str(failed), "errors": "0"}
    root = ElementTree.Element("testsuites", {"name": name, **counts})
    suite = ElementTree.SubElement(root, "testsuite", {"name": name, "skipped": "0", **counts})
    for case in report.cases:
        attributes = {"name": case.name, "classname": f"bpfleet.{report.check}"}
        if case.file:
            attributes["file"] = case.file
            if case.line is not None:
                attributes["line"] = str(case.line)
        element = ElementTree.SubElement(suite, "testcase", attributes)
        errors = [finding for finding in case.findings if finding.severity == "error"]
        if errors:
            failure = ElementTree.SubElement(
                element, "failure", {"message": errors[0].message, "type": errors[0].title}
            )
            failure.text = "\n".join(finding.message for finding in errors)
        if case.output:
            ElementTree.SubElement(element, "system-out").text = "\n".join(case.output)
    ElementTree.indent(root)
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def write_junit(report: Report, path: Path) -> None:
    try:
        files.write_atomically(path, junit_xml(report))
    except OSError as error:
        raise CommandError(
            f"cannot write the JUnit report {path}: {error.strerror or error}",
            ExitCode.INVALID_INPUT,
        ) from None


# -- printing


def emit(
    report: Report,
    output: Output,
    *,
    text: Sequence[str],
    document: object,
    junit: Path | None,
    notes: Sequence[str] = (),
) -> None:
    """Print the command's result as ``output`` asks: ``text`` is what a person reads,
    ``document`` what ``-o json`` prints, ``notes`` go to stderr whatever the format.
    GitHub's runner reads workflow commands among ordinary lines; GitLab's report must be
    the only thing on stdout."""
    for note in notes:
        typer.echo(note, err=True)
    if junit is not None:
        write_junit(report, junit)
    match output:
        case Output.TEXT:
            for line in text:
                typer.echo(line)
        case Output.JSON:
            typer.echo(json.dumps(document, indent=2, default=str))
        case Output.GITHUB:
            for line in (*text, *github_commands(report)):
                typer.echo(line)
        case Output.GITLAB:
            for line in text:
                typer.echo(line, err=True)
            typer.echo(json.dumps(gitlab_code_quality(report), indent=2))
