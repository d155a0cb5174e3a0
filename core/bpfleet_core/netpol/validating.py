"""Validation of NetworkPolicy documents, as the Kubernetes API server validates them.

``validate(document)`` parses one policy document (a mapping, as YAML or JSON gives
it), rejects what the API server rejects, and returns the policy with its CIDRs in
canonical form, plus warnings (a CIDR with host bits set is accepted, normalised and
reported). Every problem names its field path (``spec.ingress[0].ports[1].endPort``)
and the reason, in the API server's words where it has them.

``load_policies(paths)`` reads YAML files (several documents per file, or directories
of them) and reports problems with file, line and document index.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from bpfleet_core import yamlfiles
from bpfleet_core.netpol import locating, models

Loc = locating.Loc

API_VERSIONS: dict[str, type[models.NetworkPolicy] | type[models.BpfleetNetworkPolicy]] = {
    models.KUBERNETES_API_VERSION: models.NetworkPolicy,
    models.BPFLEET_API_VERSION: models.BpfleetNetworkPolicy,
}
YAML_SUFFIXES = (".yaml", ".yml")
FLOW_TEST_SUFFIXES = (".flows.yaml", ".flows.yml")  # beside policies, never policies (flowtests)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_NAME_CHARS = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')"
)
_SUBDOMAIN_CHARS = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)
_DNS_LABEL_CHARS = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name' or '123-abc')"
)
_CIDR_EXAMPLE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


# --- problems --------------------------------------------------------------------


def render_loc(loc: Loc) -> str:
    """``("spec", "ingress", 0, "from")`` -> ``spec.ingress[0].from``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text or "<document>"


@dataclass(frozen=True)
class Problem:
    """One finding: where (field path, and file/line once located) and why."""

    loc: Loc
    message: str
    file: str | None = None
    line: int | None = None
    document: int | None = None  # 0-based index, set only for multi-document files

    @property
    def path(self) -> str:
        return render_loc(self.loc)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.loc else ""
        text = f"{where}{self.message}"
        if self.file is None:
            return text
        position = f"{self.file}:{self.line}" if self.line is not None else self.file
        suffix = f" (document {self.document + 1})" if self.document is not None else ""
        return f"{position}: {text}{suffix}"


class PolicyValidationError(ValueError):
    """The document is not a valid policy; ``problems`` says every reason."""

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)  # found alongside, in documents that were valid
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class ValidatedPolicy:
    policy: models.Policy
    warnings: tuple[Problem, ...] = ()
    origin: str | None = None  # "file:line" when loaded from a file


# --- Kubernetes name and label syntax ----------------------------------------------


def _qualified_name_errors(value: str) -> list[str]:
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) > 2:
        return [
            "a qualified name "
            + _NAME_CHARS
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {error}" for error in _subdomain_errors(prefix))
    if not name:
        errors.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errors.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME.match(name):
            errors.append(f"name part {_NAME_CHARS}")
    return errors


def _subdomain_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errors.append(_SUBDOMAIN_CHARS)
    return errors


def _dns_label_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errors.append(_DNS_LABEL_CHARS)
    return errors


def label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if value and not _QUALIFIED_NAME.match(value):
        errors.append(
            f"a valid label must be an empty string or {_NAME_CHARS.removeprefix('must ')}"
        )
    return errors


def label_key_errors(value: str) -> list[str]:
    return _qualified_name_errors(value)


def port_name_errors(value: str) -> list[str]:
    """IANA_SVC_NAME, as Kubernetes checks named ports."""
    errors = []
    if len(value) > 15:
        errors.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.match(value):
        errors.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errors.append("must not contain consecutive hyphens")
    if not re.search(r"[a-z]", value):
        errors.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errors.append("must not begin or end with a hyphen")
    return errors


def _show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# --- the checks ------------------------------------------------------------------


@dataclass
class _Checker:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    cidrs: dict[Loc, str] = field(default_factory=dict)  # normalised forms, by location

    def invalid(self, loc: Loc, value: object, reason: str) -> None:
        self.problems.append(Problem(loc, f"Invalid value: {_show(value)}: {reason}"))

    def metadata(self, meta: models.ObjectMeta) -> None:
        if not meta.name:
            self.problems.append(Problem(("metadata", "name"), "Required value: name is required"))
        else:
            for error in _subdomain_errors(meta.name):
                self.invalid(("metadata", "name"), meta.name, error)
        for error in _dns_label_errors(meta.namespace):
            self.invalid(("metadata", "namespace"), meta.namespace, error)
        self.labels(("metadata", "labels"), meta.labels or {})

    def labels(self, loc: Loc, labels: Mapping[str, str]) -> None:
        for key, value in labels.items():
            for error in label_key_errors(key):
                self.invalid(loc, key, error)
            for error in label_value_errors(value):
                self.invalid((*loc, key), value, error)

    def selector(self, loc: Loc, selector: models.LabelSelector) -> None:
        for index, req in enumerate(selector.match_expressions or ()):
            here = (*loc, "matchExpressions", index)
            if req.operator in ("In", "NotIn") and not req.values:
                self.problems.append(
                    Problem(
                        (*here, "values"),
                        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    )
                )
            if req.operator in ("Exists", "DoesNotExist") and req.values:
                self.problems.append(
                    Problem(
                        (*here, "values"),
                        "Forbidden: may not be specified when `operator` is 'Exists' or "
                        "'DoesNotExist'",
                    )
                )
            for error in label_key_errors(req.key):
                self.invalid((*here, "key"), req.key, error)
            for value_index, value in enumerate(req.values or ()):
                for error in label_value_errors(value):
                    self.invalid((*here, "values", value_index), value, error)
        self.labels((*loc, "matchLabels"), selector.match_labels or {})

    def spec(self, spec: models.NetworkPolicySpec) -> None:
        self.selector(("spec", "podSelector"), spec.pod_selector)
        if spec.policy_types is not None and len(spec.policy_types) > 2:
            self.invalid(
                ("spec", "policyTypes"),
                list(spec.policy_types),
                "may not specify more than two policyTypes",
            )
        for direction in ("ingress", "egress"):
            for index, rule in enumerate(spec.rules(direction)):
                here: Loc = ("spec", direction, index)
                for port_index, port in enumerate(rule.ports or ()):
                    self.port((*here, "ports", port_index), port)
                peers_field = "from" if direction == "ingress" else "to"
                for peer_index, peer in enumerate(rule.peers or ()):
                    self.peer((*here, peers_field, peer_index), peer)
        if isinstance(spec, models.BpfleetNetworkPolicySpec) and spec.node_selector is not None:
            self.selector(("spec", "nodeSelector"), spec.node_selector)

    def port(self, loc: Loc, port: models.NetworkPolicyPort) -> None:
        end_loc = (*loc, "endPort")
        if port.port is None:
            if port.end_port is not None:
                self.invalid(
                    end_loc, port.end_port, "may not be specified when `port` is not specified"
                )
            return
        if isinstance(port.port, str):
            if port.end_port is not None:
                self.invalid(
                    end_loc, port.end_port, "may not be specified when `port` is non-numeric"
                )
            for error in port_name_errors(port.port):
                self.invalid((*loc, "port"), port.port, error)
            return
        if not 1 <= port.port <= 65535:
            self.invalid((*loc, "port"), port.port, "must be between 1 and 65535, inclusive")
        if port.end_port is not None:
            if port.end_port < port.port:
                self.invalid(end_loc, port.end_port, "must be greater than or equal to `port`")
            if not 1 <= port.end_port <= 65535:
                self.invalid(end_loc, port.end_port, "must be between 1 and 65535, inclusive")

    def peer(self, loc: Loc, peer: models.NetworkPolicyPeer) -> None:
        kinds = 0
        if peer.pod_selector is not None:
            kinds += 1
            self.selector((*loc, "podSelector"), peer.pod_selector)
        if peer.namespace_selector is not None:
            kinds += 1
            self.selector((*loc, "namespaceSelector"), peer.namespace_selector)
        if peer.ip_block is not None:
            kinds += 1
            self.ip_block((*loc, "ipBlock"), peer.ip_block)
        if kinds == 0:
            self.problems.append(Problem(loc, "Required value: must specify a peer"))
        elif kinds > 1 and peer.ip_block is not None:
            self.problems.append(
                Problem(loc, "Forbidden: may not specify both ipBlock and another peer")
            )

    def cidr(self, loc: Loc, text: str) -> models.Network | None:
        if not text:
            self.problems.append(Problem(loc, "Required value"))
            return None
        if "/" not in text or "%" in text or text.strip() != text:
            self.invalid(loc, text, _CIDR_EXAMPLE)
            return None
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.invalid(loc, text, _CIDR_EXAMPLE)
            return None
        address = ipaddress.ip_address(text.partition("/")[0])
        if address != network.network_address:
            self.warnings.append(
                Problem(
                    loc,
                    f"{text!r} has host bits set: it means {str(network)!r}, and is used as that",
                )
            )
        self.cidrs[loc] = str(network)
        return network

    def ip_block(self, loc: Loc, block: models.IPBlock) -> None:
        network = self.cidr((*loc, "cidr"), block.cidr)
        if network is None:
            return
        for index, text in enumerate(block.except_ or ()):
            here = (*loc, "except", index)
            excepted = self.cidr(here, text)
            if excepted is None:
                continue
            if excepted.version != network.version:
                self.invalid(
                    here,
                    text,
                    f"must be a strict subset of `cidr` (an IPv{excepted.version} block "
                    f"cannot be inside an IPv{network.version} one)",
                )
            elif not _strict_subset(excepted, network):
                self.invalid(here, text, "must be a strict subset of `cidr`")


def _strict_subset(inner: models.Network, outer: models.Network) -> bool:
    return (
        inner.version == outer.version
        and inner.prefixlen > outer.prefixlen
        and inner.network_address in outer
    )


# --- from pydantic errors to the API server's wording ---------------------------------


_TYPE_REASONS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be a boolean",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _from_pydantic(error: ErrorDetails) -> Problem:
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return Problem(loc, "Required value")
    if kind == "extra_forbidden":
        hint = ""
        if loc in (("spec", "nodeSelector"), ("spec", "mode")):
            hint = f" (nodeSelector and mode need apiVersion {models.BPFLEET_API_VERSION})"
        return Problem(loc, f"unknown field{hint}")
    if kind == "literal_error":
        if loc and loc[-1] == "operator":
            return Problem(loc, f"Invalid value: {_show(value)}: not a valid selector operator")
        expected = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        supported = ", ".join(json.dumps(item) for item in expected)
        return Problem(loc, f"Unsupported value: {_show(value)}: supported values: {supported}")
    if kind == "value_error":
        reason = error["msg"].removeprefix("Value error, ")
        return Problem(loc, f"Invalid value: {_show(value)}: {reason}")
    reason = _TYPE_REASONS.get(kind, error["msg"])
    return Problem(loc, f"Invalid value: {_show(value)}: {reason}")


# --- validate ----------------------------------------------------------------------


def validate(document: Mapping[str, Any]) -> ValidatedPolicy:
    """One policy document -> the validated policy (CIDRs normalised) and warnings.

    Raises ``PolicyValidationError`` listing every problem found.
    """
    if not isinstance(document, Mapping):
        raise PolicyValidationError([Problem((), "a policy document must be a mapping")])
    api_version = document.get("apiVersion")
    if api_version is None:
        raise PolicyValidationError([Problem(("apiVersion",), "Required value")])
    model = API_VERSIONS.get(api_version) if isinstance(api_version, str) else None
    if model is None:
        supported = ", ".join(json.dumps(item) for item in API_VERSIONS)
        raise PolicyValidationError(
            [
                Problem(
                    ("apiVersion",),
                    f"Unsupported value: {_show(api_version)}: supported values: {supported}",
                )
            ]
        )
    try:
        policy = model.model_validate(dict(document))
    except ValidationError as error:
        raise PolicyValidationError([_from_pydantic(item) for item in error.errors()]) from None
    checker = _Checker()
    checker.metadata(policy.metadata)
    checker.spec(policy.spec)
    if checker.problems:
        raise PolicyValidationError(checker.problems)
    return ValidatedPolicy(_normalised(policy, checker.cidrs), tuple(checker.warnings))


def _normalised(policy: models.Policy, cidrs: Mapping[Loc, str]) -> models.Policy:
    def block(loc: Loc, ip_block: models.IPBlock) -> models.IPBlock:
        excepts = ip_block.except_
        if excepts is not None:
            excepts = tuple(cidrs[(*loc, "except", index)] for index in range(len(excepts)))
        return ip_block.model_copy(update={"cidr": cidrs[(*loc, "cidr")], "except_": excepts})

    def peers(loc: Loc, items: tuple[models.NetworkPolicyPeer, ...] | None) -> Any:
        if items is None:
            return None
        return tuple(
            peer
            if peer.ip_block is None
            else peer.model_copy(
                update={"ip_block": block((*loc, index, "ipBlock"), peer.ip_block)}
            )
            for index, peer in enumerate(items)
        )

    spec = policy.spec
    update: dict[str, Any] = {}
    if spec.ingress is not None:
        update["ingress"] = tuple(
            rule.model_copy(update={"from_": peers(("spec", "ingress", index, "from"), rule.from_)})
            for index, rule in enumerate(spec.ingress)
        )
    if spec.egress is not None:
        update["egress"] = tuple(
            rule.model_copy(update={"to": peers(("spec", "egress", index, "to"), rule.to)})
            for index, rule in enumerate(spec.egress)
        )
    return policy.model_copy(update={"spec": spec.model_copy(update=update)})


# --- YAML files ----------------------------------------------------------------------


@dataclass(frozen=True)
class SourceDocument:
    """One YAML document of a file, with the line of each field in it."""

    file: str
    index: int  # 0-based position in the file
    count: int  # documents in the file
    line: int  # 1-based line where the document starts
    content: Any
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        """The line of the field at ``loc``, or of its nearest enclosing field."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return self.line

    def locate(self, problem: Problem) -> Problem:
        return replace(
            problem,
            file=self.file,
            line=self.line_of(problem.loc),
            document=self.index if self.count > 1 else None,
        )


def parse_yaml(
    text: str | bytes, file: str, budget: yamlfiles.Budget | None = None
) -> list[SourceDocument]:
    """Every non-empty document of a YAML stream, with field lines.

    Raises ``PolicyValidationError`` for YAML syntax errors, duplicate keys, aliases,
    nesting too deep, text that is not UTF-8, and anything past the ``yamlfiles`` limits
    (with ``budget`` shared by the files read together); ``locating`` says which.
    """
    located = locating.parse(text, file, budget)
    if located.problems:
        raise PolicyValidationError(
            [
                Problem(item.loc, item.message, file=file, line=item.line)
                for item in located.problems
            ]
        )
    return [
        SourceDocument(
            file,
            document.index,
            located.count,
            document.line,
            document.content,
            {loc: span.line for loc, span in document.spans.items()},
        )
        for document in located.documents
    ]


def validate_source(source: SourceDocument) -> ValidatedPolicy:
    """``validate`` for a document read from a file: problems and warnings say where."""
    try:
        validated = validate(source.content)
    except PolicyValidationError as error:
        raise PolicyValidationError([source.locate(item) for item in error.problems]) from None
    return ValidatedPolicy(
        validated.policy,
        tuple(source.locate(item) for item in validated.warnings),
        origin=f"{source.file}:{source.line}",
    )


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories expand to their ``*.yaml``/``*.yml`` files, sorted,
    flow-test files (``*.flows.yaml``) left out."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    item
                    for item in path.rglob("*")
                    if item.is_file()
                    and item.suffix in YAML_SUFFIXES
                    and not item.name.endswith(FLOW_TEST_SUFFIXES)
                )
            )
        else:
            files.append(path)
    return files


def load_policies(paths: Iterable[Path]) -> list[ValidatedPolicy]:
    """Read, parse and validate every policy in the files and directories given.

    Raises ``PolicyValidationError`` with every problem of every file (files that cannot
    be read, YAML errors, invalid policies, one policy name defined twice).
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    policies: list[ValidatedPolicy] = []
    defined: dict[str, str] = {}
    budget = yamlfiles.Budget()  # one for all the files: together they are bounded too
    for path in policy_files(paths):
        try:
            text = yamlfiles.read(path)
        except OSError as error:
            problems.append(Problem((), f"cannot read: {error.strerror}", file=str(path)))
            continue
        try:
            sources = parse_yaml(text, str(path), budget)
        except PolicyValidationError as error:
            problems.extend(error.problems)
            continue
        for source in sources:
            try:
                validated = validate_source(source)
            except PolicyValidationError as error:
                problems.extend(error.problems)
                continue
            key = validated.policy.key
            if key in defined:
                problems.append(
                    source.locate(
                        Problem(
                            ("metadata", "name"),
                            f"policy {key} is already defined at {defined[key]}",
                        )
                    )
                )
                continue
            defined[key] = validated.origin or str(path)
            policies.append(validated)
            warnings.extend(validated.warnings)
    if problems:
        raise PolicyValidationError(problems, warnings)
    return policies
