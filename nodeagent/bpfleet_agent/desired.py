"""Desired state and endpoints as the agent reads them from files.

Both are local files (the desired-state file, or the assignments the watcher stored;
the endpoints file), read whole and judged in parts: one program the agent cannot
read never hides the others, nor the policy part.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import ValidationError

from bpfleet_agent.policyparts import PolicyPartReader
from bpfleet_core import yamlfiles
from bpfleet_core.protocol import (
    POLICY_PROGRAM,
    DesiredState,
    EndpointSet,
    PolicyAssignment,
    ProgramAssignment,
)

log = logging.getLogger(__name__)


class DesiredStateError(ValueError):
    """The desired-state document as a whole cannot be used."""


def describe_validation_error(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'document'}: {item['msg']}"
        for item in error.errors()
    )


class Parsed(NamedTuple):
    """A desired-state document: what is usable, what is not (by program name), and why
    the policy part is not (empty when it is fine or absent)."""

    state: DesiredState
    invalid: dict[str, str]
    policy_error: str = ""


def parse_desired(text: str, policy_reader: PolicyPartReader | None = None) -> Parsed:
    """Parse the document; entries that are invalid alone are returned by name with why,
    so one bad program never stops the others (nor the policy part)."""
    try:
        document = yamlfiles.load(text, "the desired-state file") or {}
    except yaml.YAMLError as error:
        raise DesiredStateError(f"not valid YAML: {error}") from error
    except RecursionError:
        raise DesiredStateError("nested too deeply to read") from None
    return desired_from_document(document, policy_reader)


def parse_assignments(text: str, policy_reader: PolicyPartReader | None = None) -> Parsed:
    """``parse_desired`` for the stored assignments, which are JSON (and JSON is not
    quite YAML 1.1)."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise DesiredStateError(f"not valid JSON: {error}") from error
    except RecursionError:
        raise DesiredStateError("nested too deeply to read") from None
    return desired_from_document(document, policy_reader)


def desired_from_document(
    document: object, policy_reader: PolicyPartReader | None = None
) -> Parsed:
    """``policy_reader`` reads the policy part reusing what the last part read with it
    had (see ``policyparts``); without one it is validated whole."""
    if not isinstance(document, dict):
        raise DesiredStateError("the desired state must be a mapping with 'programs'")
    raw_programs = document.get("programs") or []
    if not isinstance(raw_programs, list):
        raise DesiredStateError("'programs' must be a list")
    try:
        state = DesiredState(revision=document.get("revision", 0))
    except ValidationError as error:
        raise DesiredStateError(describe_validation_error(error)) from error
    invalid: dict[str, str] = {}
    for index, raw in enumerate(raw_programs):
        try:
            assignment = ProgramAssignment.model_validate(raw)
        except ValidationError as error:
            name = raw.get("name") if isinstance(raw, dict) else None
            label = name if isinstance(name, str) and name else f"programs[{index}]"
            invalid[label] = describe_validation_error(error)
            continue
        if assignment.name == POLICY_PROGRAM:
            invalid[assignment.name] = "this name is reserved for the network-policy datapath"
            continue
        if assignment.name in invalid or any(p.name == assignment.name for p in state.programs):
            invalid[assignment.name] = "program name listed twice"
            continue
        state.programs.append(assignment)
    policy_error = ""
    if document.get("policy") is not None:
        try:
            state.policy = (
                policy_reader.read(document["policy"])
                if policy_reader is not None
                else PolicyAssignment.model_validate(document["policy"])
            )
        except ValidationError as error:
            policy_error = describe_validation_error(error)
    return Parsed(state, invalid, policy_error)


class EndpointsError(ValueError):
    """The endpoints file cannot be used; the last good one still counts."""


def parse_endpoints(text: str) -> EndpointSet:
    """The endpoints file: ``{endpoints: [...], namespaces: {name: labels}}``, or just
    the list of endpoints; YAML or JSON. Empty: no endpoints."""
    try:
        document = yamlfiles.load(text, "the endpoints file")
    except yaml.YAMLError as error:
        raise EndpointsError(f"not valid YAML: {error}") from error
    except RecursionError:
        raise EndpointsError("nested too deeply to read") from None
    if document is None:
        return EndpointSet()
    if isinstance(document, list):
        document = {"endpoints": document}
    try:
        return EndpointSet.model_validate(document)
    except ValidationError as error:
        raise EndpointsError(describe_validation_error(error)) from error


class EndpointsFile:
    """This node's endpoints file, read again only when it changed (a stat per look)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.current: EndpointSet | None = None if path is None else EndpointSet()
        self.error = ""

    def read(self) -> EndpointSet | None:
        """The endpoints (None when no file is configured). A missing file declares
        none; a broken one keeps the last good set, and ``error`` says why."""
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self.current, self.error = None, EndpointSet(), ""
            return self.current
        except OSError as error:
            self.error = f"endpoints file {self.path}: {error}"
            return self.current
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return self.current
        self._stamp = stamp
        try:
            self.current, self.error = parse_endpoints(self.path.read_bytes().decode()), ""
        except (OSError, UnicodeDecodeError, EndpointsError) as error:
            self.error = f"endpoints file {self.path}: {error}"
            log.error("%s; keeping the endpoints read before", self.error)
        except Exception as error:
            # Whatever else this file does, the agent and the endpoints it had go on.
            self.error = f"endpoints file {self.path}: {type(error).__name__}: {error}"
            log.exception("endpoints file %s; keeping the endpoints read before", self.path)
        return self.current
