"""The fleet as the policy editor sees it: the live topology and the stored policies,
handed to ``bpfleet_core.netpol.drafting``; pages of the topology; what a selector
matches now; the labels and named ports a peer picker offers. Reads only: nothing here
writes to the database.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlmodel import Session, col, select

from bpfleet_api import policies
from bpfleet_api.changes import Invalid
from bpfleet_api.models import Policy
from bpfleet_core.netpol import connectivity, drafting, flowtests, models, validating

_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)


def stored_policies(session: Session) -> list[models.Policy]:
    """Every policy the API stores, in (namespace, name) order."""
    rows = session.exec(select(Policy).order_by(col(Policy.namespace), col(Policy.name))).all()
    return [_POLICY.validate_python(row.document) for row in rows]


def stored_policy(session: Session, namespace: str, name: str) -> models.Policy:
    return _POLICY.validate_python(policies.get_policy(session, namespace, name).document)


def topology(session: Session) -> models.Topology:
    return policies.fleet_topology(session)


def world(
    session: Session, given: models.Topology | None
) -> tuple[list[models.Policy], models.Topology]:
    """What a draft is judged in: the live fleet with every stored policy, or a given
    topology (the tutorial's) with no policy but the draft's."""
    if given is not None:
        return [], given
    return stored_policies(session), topology(session)


def simulate(
    session: Session,
    text: str,
    options: drafting.Options,
    flows: str | None,
    given: models.Topology | None = None,
) -> drafting.Simulation:
    """The draft against the live fleet, every other stored policy included (or
    against ``given`` alone)."""
    tests = flowtests.parse(flows, "flows") if flows is not None else None
    stored, judged_on = world(session, given)
    return drafting.simulate(drafting.read(text), stored, judged_on, options, tests)


def explain(
    session: Session,
    text: str,
    *,
    client: str,
    server: str,
    protocol: models.Protocol,
    port: int,
    this_policy_only: bool,
    given: models.Topology | None = None,
) -> drafting.CellExplanation:
    stored, judged_on = world(session, given)
    try:
        return drafting.explain(
            drafting.read(text),
            stored,
            judged_on,
            client=client,
            server=server,
            protocol=protocol,
            port=port,
            this_policy_only=this_policy_only,
        )
    except ValueError as error:
        raise Invalid(str(error)) from error


# --- the topology, paged -----------------------------------------------------------------


@dataclass(frozen=True)
class TopologyPage:
    endpoints: list[dict[str, Any]]
    namespaces: dict[str, dict[str, str]]
    nodes: dict[str, dict[str, str]]
    total: int
    next: str | None


def _cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _after(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if "/" not in key:
        raise Invalid("continue: not a token this API gave out; start again without it")
    return key


def topology_page(session: Session, limit: int, cursor: str | None) -> TopologyPage:
    """Endpoints in (namespace, name) order, ``limit`` at a time; every page carries the
    namespaces and the nodes hosting endpoints (they are few, and small)."""
    whole = topology(session)
    names = sorted(whole.pods)
    start = 0
    if cursor is not None:
        after = _after(cursor)
        start = next((i for i, name in enumerate(names) if name > after), len(names))
    page = names[start : start + limit]
    more = start + limit < len(names)
    return TopologyPage(
        endpoints=[drafting.endpoint_view(whole, name) for name in page],
        namespaces=dict(whole.namespaces),
        nodes=dict(whole.nodes),
        total=len(names),
        next=_cursor(page[-1]) if more and page else None,
    )


# --- selectors and the picker's vocabulary ----------------------------------------------


def matching(
    session: Session,
    namespace: str,
    pod_selector: dict[str, Any],
    node_selector: dict[str, Any] | None,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    """How many endpoints a policy with these selectors in ``namespace`` would select
    now, and the first ``limit`` of them."""
    document: dict[str, Any] = {
        "apiVersion": models.BPFLEET_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": "selection"},
        "spec": {"podSelector": pod_selector},
    }
    if node_selector is not None:
        document["spec"]["nodeSelector"] = node_selector
    try:
        policy = validating.validate(document).policy
    except validating.PolicyValidationError as error:
        raise Invalid(
            "not a valid selector", [str(problem) for problem in error.problems]
        ) from error
    whole = topology(session)
    index = connectivity.Index(whole)
    names = index.pods(index.selecting(policy))
    return len(names), [drafting.endpoint_view(whole, name) for name in names[:limit]]
