"""Flow tests: what a policy must let through and what not, in a file beside it in Git.

A flow-test file is named after its policy, ``<policy>.flows.yaml`` (or ``.flows.yml``),
and lists flows, one a line; it may also describe the endpoints they name::

    flows:
      - shop/web -> shop/db TCP/5432 expect allow
      - shop/batch -> shop/db TCP/5432 expect deny
      - 203.0.113.7 -> shop/db TCP/5432 expect deny   # an address outside the fleet
      - shop/web -> shop/db TCP/pg expect allow       # a port the server names
    endpoints:                    # optional: used only where no topology is given
      shop/web: {labels: {app: web}}
      shop/batch: {labels: {app: batch}}
      shop/db: {labels: {app: db}, ip: 10.0.0.2, ports: [{name: pg, port: 5432}]}
    namespaces:                   # optional labels, same rule
      shop: {team: payments}

A flow is ``CLIENT -> SERVER PROTOCOL/PORT expect allow|deny``: endpoints as
``namespace/name`` or an IP address, protocol TCP, UDP or SCTP, port a number or the
name of a port the server declares. Each flow is judged by the simulator with every
policy in force (``simulating.explain``, enforce view) and passes when the verdict is
the one expected; a failing flow carries the explanation.

Where the endpoints come from: the editor and ``bpfleet validate --api-url`` use the
fleet's live topology; ``bpfleet validate --topology T.json`` uses that file; plain
``bpfleet validate`` uses the endpoints and namespaces the flow-test file declares
(an endpoint without ``ip`` gets one from 198.18.0.0/15). A file's own endpoints are
never mixed into a real topology: a flow naming an endpoint the topology lacks fails,
saying so.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bpfleet_core.netpol import locating, models, simulating, validating
from bpfleet_core.netpol.locating import Loc, LocatedDocument
from bpfleet_core.netpol.models import Protocol

SUFFIXES = validating.FLOW_TEST_SUFFIXES
MAX_FLOWS = 2000
ADDRESS_POOL = ipaddress.ip_network("198.18.0.0/15")
_ROW = re.compile(
    r"^(?P<client>\S+)\s*->\s*(?P<server>\S+)\s+(?P<protocol>[A-Za-z]+)/(?P<port>[A-Za-z0-9-]+)"
    r"\s+expect\s+(?P<verdict>allow|deny)$",
    re.IGNORECASE,
)
FORMAT = "CLIENT -> SERVER PROTOCOL/PORT expect allow|deny"


def is_flow_test_file(path: str) -> bool:
    return path.endswith(SUFFIXES)


@dataclass(frozen=True)
class FlowProblem:
    message: str
    line: int
    column: int
    file: str = "<flows>"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "column": self.column}


@dataclass(frozen=True)
class FlowTest:
    text: str
    line: int
    column: int
    client: str
    server: str
    protocol: Protocol
    port: int | str  # a number, or a port name of the server
    expect_allowed: bool

    @property
    def expect(self) -> str:
        return "allow" if self.expect_allowed else "deny"


@dataclass(frozen=True)
class FlowTestFile:
    file: str
    tests: tuple[FlowTest, ...]
    problems: tuple[FlowProblem, ...]
    topology: models.Topology | None  # what the file declares, if anything


@dataclass(frozen=True)
class FlowResult:
    test: FlowTest
    passed: bool
    allowed: bool | None = None  # None when the flow could not be judged
    port: int | None = None  # the port judged (a named port resolved)
    explanation: simulating.Explanation | None = None
    error: str | None = None

    def __str__(self) -> str:
        test = self.test
        head = f"{test.line}: {'ok' if self.passed else 'FAIL'}: {test.text}"
        if self.error is not None:
            return f"{head}: {self.error}"
        if self.passed or self.explanation is None:
            return head
        lines = "\n".join(f"    {line}" for line in self.explanation.lines())
        return f"{head}: {'allowed' if self.allowed else 'denied'}\n{lines}"

    def to_dict(self) -> dict[str, Any]:
        test = self.test
        found: dict[str, Any] = {
            "text": test.text,
            "line": test.line,
            "column": test.column,
            "client": test.client,
            "server": test.server,
            "protocol": test.protocol,
            "port": self.port if self.port is not None else test.port,
            "expect": test.expect,
            "verdict": None if self.allowed is None else ("allow" if self.allowed else "deny"),
            "passed": self.passed,
            "error": self.error,
            "explanation": None,
        }
        if not self.passed and self.explanation is not None:
            found["explanation"] = self.explanation.to_dict()
            found["reason"] = self.explanation.lines()
        return found


# --- reading ---------------------------------------------------------------------------


def parse_row(text: str) -> tuple[str, str, Protocol, int | str, bool] | str:
    """One flow, or the reason it is not one."""
    match = _ROW.match(text.strip())
    if match is None:
        return f"not a flow: {text.strip()!r}; write {FORMAT}"
    protocol = match["protocol"].upper()
    if protocol not in models.PROTOCOLS:
        return f"protocol must be TCP, UDP or SCTP, not {match['protocol']!r}"
    port: int | str = match["port"]
    assert isinstance(port, str)
    if port.isdigit():
        port = int(port)
        if not 1 <= port <= 65535:
            return f"port must be between 1 and 65535, not {port}"
    else:
        errors = validating.port_name_errors(port)
        if errors:
            return f"port {port!r} is neither a number nor a port name: {errors[0]}"
    for name in (match["client"], match["server"]):
        if "/" not in name and not _is_address(name):
            return f"{name!r} is neither namespace/name nor an IP address"
    checked: Protocol = protocol
    return match["client"], match["server"], checked, port, match["verdict"].lower() == "allow"


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse(text: str, file: str = "<flows>") -> FlowTestFile:
    """A flow-test file: its flows with their lines, its problems, its own endpoints."""
    located = locating.parse(text)
    problems = [
        FlowProblem(problem.message, problem.line, problem.column, file)
        for problem in located.problems
    ]
    if located.problems or not located.documents:
        if not located.problems:
            problems.append(FlowProblem("no flows: the file is empty", 1, 1, file))
        return FlowTestFile(file, (), tuple(problems), None)
    if len(located.documents) > 1:
        extra = located.documents[1]
        problems.append(FlowProblem("a flow-test file holds one document", extra.line, 1, file))
    document = located.documents[0]
    content = document.content

    def problem(loc: Loc, message: str) -> None:
        span = document.span_of(loc)
        problems.append(FlowProblem(message, span.line, span.column, file))

    if not isinstance(content, Mapping):
        problem(
            (),
            "a flow-test file is a mapping with `flows` (and optionally `endpoints`, `namespaces`)",
        )
        return FlowTestFile(file, (), tuple(problems), None)
    for key in content:
        if key not in ("flows", "endpoints", "namespaces"):
            problem((key,), f"unknown field {key!r}: expected flows, endpoints, namespaces")
    flows = content.get("flows")
    tests: list[FlowTest] = []
    if not isinstance(flows, list):
        problem(("flows",), f"`flows` must be a list of lines like {FORMAT!r}")
    elif len(flows) > MAX_FLOWS:
        problem(("flows",), f"at most {MAX_FLOWS} flows in one file, not {len(flows)}")
    else:
        for position, row in enumerate(flows):
            span = document.span_of(("flows", position))
            if not isinstance(row, str):
                problem(("flows", position), f"a flow is one line: {FORMAT}")
                continue
            parsed = parse_row(row)
            if isinstance(parsed, str):
                problem(("flows", position), parsed)
                continue
            client, server, protocol, port, expect = parsed
            tests.append(
                FlowTest(
                    row.strip(), span.line, span.column, client, server, protocol, port, expect
                )
            )
    topology = _declared(document, problem)
    return FlowTestFile(file, tuple(tests), tuple(problems), topology)


def _declared(
    document: LocatedDocument, problem: Callable[[Loc, str], None]
) -> models.Topology | None:
    """The topology the file declares (``endpoints``, ``namespaces``), if it declares one."""
    content = document.content
    endpoints, namespaces = content.get("endpoints"), content.get("namespaces")
    if endpoints is None and namespaces is None:
        return None
    if not isinstance(endpoints, Mapping | None) or not isinstance(namespaces, Mapping | None):
        problem((), "`endpoints` and `namespaces` must be mappings")
        return None
    pods: dict[str, Any] = {}
    taken = {
        str(item.get("ip"))
        for item in (endpoints or {}).values()
        if isinstance(item, Mapping) and item.get("ip") is not None
    }
    pool = (str(address) for address in ADDRESS_POOL.hosts() if str(address) not in taken)
    for name, item in (endpoints or {}).items():
        declared = dict(item) if isinstance(item, Mapping) else item
        if isinstance(declared, dict) and declared.get("ip") is None:
            declared["ip"] = next(pool)
        pods[str(name)] = declared if declared is not None else {"ip": next(pool)}
    names = {str(name).partition("/")[0] for name in pods}
    namespace_labels = {str(name): labels or {} for name, labels in (namespaces or {}).items()}
    for name in names:
        namespace_labels.setdefault(name, {})
    try:
        return models.Topology.model_validate({"namespaces": namespace_labels, "pods": pods})
    except ValidationError as error:
        for item in error.errors():
            loc = tuple(part for part in item["loc"] if part != "[key]")
            where: Loc = ("endpoints", *loc[1:]) if loc and loc[0] == "pods" else loc
            problem(where, f"{validating.render_loc(where)}: {item['msg']}")
        return None


# --- running ---------------------------------------------------------------------------


def run_one(
    test: FlowTest, policies: Sequence[models.Policy], topology: models.Topology
) -> FlowResult:
    try:
        server = simulating.endpoint(topology, test.server)
        simulating.endpoint(topology, test.client)
    except ValueError as error:
        return FlowResult(test, False, error=f"{error}")
    port = test.port
    if isinstance(port, str):
        number = server.pod.named_port(port, test.protocol) if server.pod is not None else None
        if number is None:
            return FlowResult(
                test, False, error=f"{server.name} declares no {test.protocol} port named {port!r}"
            )
        port = number
    explanation = simulating.explain(
        policies, topology, test.client, test.server, test.protocol, port
    )
    return FlowResult(
        test, explanation.allowed == test.expect_allowed, explanation.allowed, port, explanation
    )


def run(
    tests: Iterable[FlowTest], policies: Sequence[models.Policy], topology: models.Topology
) -> list[FlowResult]:
    """Every flow judged with ``policies`` over ``topology``."""
    return [run_one(test, policies, topology) for test in tests]
