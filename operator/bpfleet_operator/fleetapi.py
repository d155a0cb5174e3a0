"""The fleet API as the operator uses it: put and delete desired state, read summaries,
and mirror what Kubernetes knows (node labels and pod CIDRs, namespace labels, the
workloads on each node).

The API is the single writer of fleet state; the operator only hands it specs and
reads back what the nodes report. Every failure is one of ``bpfleet_core.failures``:
``TemporaryFailure`` (retry later: the API is unreachable or busy) or a
``PermanentFailure`` (the request itself is wrong; ``NotFound`` among them).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bpfleet_core import failures, proposals
from bpfleet_core.resources import BpfProgramSpec, GitSourceSpec, GitSourceStatus, SourceFile
from bpfleet_operator.settings import OperatorSettings

TIMEOUT_SECONDS = 10.0
RECONCILE_WAIT_SECONDS = 30.0
MAX_FOLLOW_DELAY = 60.0  # between tries of a long-poll that keeps failing
log = logging.getLogger(__name__)


class FleetApi:
    def __init__(
        self,
        url: str,
        token: str,
        transport: httpx.BaseTransport | None = None,
        *,
        ca: Path | None = None,
    ) -> None:
        """``ca``: the CA bundle that vouches for an https API (only it); the system's
        trust store when None."""
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca)) if ca is not None else True
        )
        self._client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_SECONDS,
            transport=transport,
            verify=verify,
        )

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> FleetApi:
        return cls(settings.api_url, settings.api_token.get_secret_value(), ca=settings.api_ca)

    def close(self) -> None:
        self._client.close()

    # -- programs

    def put_program(self, name: str, spec: BpfProgramSpec) -> dict[str, Any]:
        body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dict(self._json("PUT", f"/v1/programs/{name}", json=body))

    def get_program(self, name: str) -> dict[str, Any] | None:
        found = self._json_or_none("GET", f"/v1/programs/{name}")
        return dict(found) if found is not None else None

    def delete_program(self, name: str) -> None:
        self._json_or_none("DELETE", f"/v1/programs/{name}")

    def program_nodes(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/programs/{name}/nodes"))

    def validate_program(self, spec: BpfProgramSpec) -> list[str]:
        """What the fleet would refuse in this spec (artifact missing, unsigned, not fitting)."""
        body = {"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
        result = self._json("POST", "/v1/validate", json=body)
        return [] if result["valid"] else list(result["problems"])

    # -- network policies

    def put_policy(self, document: Mapping[str, Any]) -> dict[str, Any]:
        meta = document["metadata"]
        path = f"/v1/policies/{meta.get('namespace', 'default')}/{meta['name']}"
        return dict(self._json("PUT", path, json=dict(document)))

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._json_or_none("GET", f"/v1/policies/{namespace}/{name}")
        return dict(found) if found is not None else None

    def delete_policy(self, namespace: str, name: str) -> None:
        self._json_or_none("DELETE", f"/v1/policies/{namespace}/{name}")

    def policy_nodes(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/policies/{namespace}/{name}/nodes"))

    # -- nodes

    def set_node_labels(self, name: str, labels: Mapping[str, str]) -> bool:
        """False when the fleet does not know the node (its agent has not registered)."""
        found = self._json_or_none("PUT", f"/v1/nodes/{name}/labels", json={"labels": labels})
        return found is not None

    def node_labels(self) -> dict[str, dict[str, str]]:
        """Every node the fleet knows, with the labels it holds for it."""
        return {node["name"]: dict(node["labels"]) for node in self._json("GET", "/v1/nodes")}

    def set_pod_cidrs(self, name: str, cidrs: Sequence[str]) -> bool:
        """The node's pod CIDRs (agents may declare endpoints inside them only); False
        when the fleet does not know the node yet."""
        body = {"podCIDRs": list(cidrs)}
        return self._json_or_none("PUT", f"/v1/nodes/{name}/pod-cidrs", json=body) is not None

    def set_workloads(self, name: str, workloads: Sequence[Mapping[str, Any]]) -> bool:
        """The pods Kubernetes runs on the node: from now on its topology entries; False
        when the fleet does not know the node yet."""
        body = {"workloads": [dict(workload) for workload in workloads]}
        return self._json_or_none("PUT", f"/v1/nodes/{name}/workloads", json=body) is not None

    # -- namespaces

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        self._json("PUT", f"/v1/namespaces/{name}", json={"labels": dict(labels)})

    def delete_namespace(self, name: str) -> None:
        self._json_or_none("DELETE", f"/v1/namespaces/{name}")

    # -- GitSources, for the dashboard (the operator stays their only Git client)

    def report_source(
        self,
        namespace: str,
        name: str,
        spec: GitSourceSpec | None,
        status: GitSourceStatus,
        files: Sequence[SourceFile] = (),
    ) -> None:
        """Tell the fleet how a pass over a source ended, so the dashboard shows it, with
        the text of the files the policy editor opens."""
        body = {
            "spec": spec.model_dump(mode="json", by_alias=True) if spec is not None else None,
            "status": status.model_dump(mode="json", by_alias=True),
            "files": [item.model_dump(mode="json", by_alias=True) for item in files],
        }
        self._json("PUT", f"/v1/gitsources/{namespace}/{name}/status", json=body)

    def forget_source(self, namespace: str, name: str) -> None:
        self._json_or_none("DELETE", f"/v1/gitsources/{namespace}/{name}")

    def reconcile_requests(self, after: int | None, wait: float) -> tuple[int, list[str]]:
        """Sources someone asked to reconcile since ``after`` (a long-poll of ``wait`` s);
        returns the cursor to pass next and ``namespace/name`` of each."""
        params: dict[str, Any] = {"wait": wait} if after is not None else {}
        if after is not None:
            params["after"] = after
        found = self._json(
            "GET",
            "/v1/gitsources/reconcile-requests",
            params=params,
            timeout=wait + TIMEOUT_SECONDS,
        )
        return int(found["cursor"]), [str(source) for source in found["sources"]]

    # -- proposals (the operator writes them to Git; the API keeps their cards)

    def proposal_work(
        self, after: int | None, wait: float
    ) -> tuple[int, list[proposals.ProposalWork]]:
        """Proposals to push and merges to make (a long-poll of ``wait`` s); without
        ``after``, every pending item. Returns the cursor to pass next."""
        params: dict[str, Any] = {"wait": wait if after is not None else 0}
        if after is not None:
            params["after"] = after
        found = proposals.ProposalWorkList.model_validate(
            self._json(
                "GET", "/v1/operator/proposals", params=params, timeout=wait + TIMEOUT_SECONDS
            )
        )
        return found.cursor, list(found.work)

    def report_proposal(self, proposal: int, report: proposals.ProposalReport) -> None:
        body = report.model_dump(mode="json", by_alias=True)  # nulls say "absent" there
        self._json("PUT", f"/v1/proposals/{proposal}/status", json=body)

    def open_proposals(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The source's proposals that are pushed but not applied yet (the API's cards)."""
        params = [("source", f"{namespace}/{name}")]
        params += [("state", state) for state in proposals.OPEN_STATES]
        return list(self._json("GET", "/v1/proposals", params=params))

    # -- transport

    def _json_or_none(self, method: str, path: str, **kwargs: Any) -> Any:
        """``_json``, with None for 404 (the thing, or the node it is about, is unknown)."""
        try:
            return self._json(method, path, **kwargs)
        except failures.NotFound:
            return None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise failures.TemporaryFailure(f"fleet API unreachable: {error}") from None
        if response.status_code == 204:
            return {}
        if response.is_success:
            return response.json()
        detail, problems = _problem(response)
        message = f"{response.status_code} {method} {path}: {detail}"
        failure = failures.for_status(response.status_code, message, problems)
        raise failure or failures.PermanentFailure(message, status=response.status_code)


def _problem(response: httpx.Response) -> tuple[str, list[str]]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase, []
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's request validation errors
        problems = [
            f"{'.'.join(str(part) for part in item.get('loc', ())[1:])}: {item.get('msg')}"
            for item in detail
        ]
        return "; ".join(problems), problems
    problems = body.get("problems", []) if isinstance(body, dict) else []
    return str(detail or body), list(problems)


def follow_reconcile_requests(
    api: FleetApi,
    wake: Callable[[str, str], None],
    stop: threading.Event,
    wait: float = RECONCILE_WAIT_SECONDS,
) -> None:
    """Until ``stop``: long-poll the fleet for "reconcile now" and wake each source named
    (``wake(namespace, name)``). An unreachable fleet is retried with backoff."""
    cursor: int | None = None
    backoff = failures.Backoff(1.0)
    while not stop.is_set():
        try:
            cursor, sources = api.reconcile_requests(cursor, wait)
        except failures.Failure as error:
            delay = backoff.wait(True, MAX_FOLLOW_DELAY)
            log.warning("reconcile requests: %s; retrying in %.0fs", error.message, delay)
            stop.wait(delay)
            continue
        backoff.wait(False, MAX_FOLLOW_DELAY)
        for source in sources:
            namespace, _, name = source.partition("/")
            log.info("GitSource %s: reconcile requested", source)
            wake(namespace, name)


def follow_proposals(
    api: FleetApi,
    handle: Callable[[proposals.ProposalWork], bool],
    stop: threading.Event,
    wait: float = RECONCILE_WAIT_SECONDS,
) -> None:
    """Until ``stop``: long-poll the fleet for proposal work and ``handle`` each item,
    which says whether it is done. What is not done (the remote unreachable, say) comes
    back with every pending item after a delay that doubles, up to a minute."""
    cursor: int | None = None
    backoff = failures.Backoff(1.0)
    while not stop.is_set():
        try:
            cursor, work = api.proposal_work(cursor, wait)
        except failures.Failure as error:
            delay = backoff.wait(True, MAX_FOLLOW_DELAY)
            log.warning("proposal work: %s; retrying in %.0fs", error.message, delay)
            stop.wait(delay)
            continue
        done = [handle(item) for item in work if not stop.is_set()]
        if all(done):
            backoff.wait(False, MAX_FOLLOW_DELAY)
            continue
        stop.wait(backoff.wait(True, MAX_FOLLOW_DELAY))
        cursor = None  # every pending item again, the unfinished ones among them
