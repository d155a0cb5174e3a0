"""The fleet API as the CLI (and its tests) use it: the only module of the CLI that
talks HTTP.

Every call returns the API's own view models, parsed with pydantic; every failure is
one of ``bpfleet_core.failures``: unreachable or 5xx -> ``TemporaryFailure``, 401 ->
``Unauthorized``, 403 -> ``Forbidden``, 404 -> ``NotFound`` (``MissingRoute`` when the
API has no such route at all, an older API), other 4xx -> ``PermanentFailure``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from bpfleet_api.editor_views import TopologyPageView
from bpfleet_api.views import (
    ArtifactView,
    EventView,
    GitSourceDetail,
    GitSourceView,
    NodeDetail,
    NodePolicyView,
    NodeProgramView,
    NodeView,
    PolicyView,
    PreflightRequest,
    PreflightResult,
    ProgramView,
    ProposalDetail,
    ProposalRequest,
    ProposalView,
    RolloutView,
    SessionView,
    SharedDraft,
    SharedDraftView,
    ValidateResult,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

from bpfleet_cli.contexts import Target
from bpfleet_core import failures
from bpfleet_core.netpol.models import Topology
from bpfleet_core.resources import BpfProgramSpec

TIMEOUT_SECONDS = 30.0
RolloutAction = Literal["pause", "resume", "abort"]
Model = TypeVar("Model", bound=BaseModel)
Parsed = TypeVar("Parsed")


class MissingRoute(failures.NotFound):
    """The API answered 404 for the route itself: it is older than this command."""


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


class FleetClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        ca: str | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Plain HTTP never uses a CA bundle: skip loading one (it costs more than a call).
        verify: bool | str = False
        if url.startswith("https:"):
            verify = ca if ca is not None else True
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=verify)

    @classmethod
    def to(cls, target: Target, timeout: float = TIMEOUT_SECONDS) -> FleetClient:
        return cls(
            target.url, target.token, ca=str(target.ca) if target.ca else None, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- who

    def whoami(self) -> SessionView:
        return self._get(SessionView, "/v1/session")

    # -- nodes

    def nodes(self) -> list[NodeView]:
        return self._get_list(NodeView, "/v1/nodes")

    def node(self, name: str) -> NodeDetail:
        return self._get(NodeDetail, _path("v1", "nodes", name))

    # -- programs and rollouts

    def programs(self) -> list[ProgramView]:
        return self._get_list(ProgramView, "/v1/programs")

    def program(self, name: str) -> ProgramView:
        return self._get(ProgramView, _path("v1", "programs", name))

    def put_program(self, name: str, spec: BpfProgramSpec) -> ProgramView:
        body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        return ProgramView.model_validate(
            self._json("PUT", _path("v1", "programs", name), json=body)
        )

    def program_nodes(self, name: str) -> list[NodeProgramView]:
        return self._get_list(NodeProgramView, _path("v1", "programs", name, "nodes"))

    def program_events(self, name: str, limit: int = 100) -> list[EventView]:
        return self._get_list(
            EventView, _path("v1", "programs", name, "events"), params={"limit": limit}
        )

    def kill_program(self, name: str) -> ProgramView:
        return ProgramView.model_validate(self._json("POST", _path("v1", "programs", name, "kill")))

    def rollouts(self, program: str | None = None) -> list[RolloutView]:
        params = {"program": program} if program else {}
        return self._get_list(RolloutView, "/v1/rollouts", params=params)

    def act_on_rollout(self, rollout_id: int, action: RolloutAction) -> RolloutView:
        path = _path("v1", "rollouts", str(rollout_id), action)
        return RolloutView.model_validate(self._json("POST", path))

    # -- network policies

    def policies(self) -> list[PolicyView]:
        return self._get_list(PolicyView, "/v1/policies")

    def policy(self, namespace: str, name: str) -> PolicyView:
        return self._get(PolicyView, _path("v1", "policies", namespace, name))

    def policy_nodes(self, namespace: str, name: str) -> list[NodePolicyView]:
        return self._get_list(NodePolicyView, _path("v1", "policies", namespace, name, "nodes"))

    def topology(self, page_size: int = 1000) -> Topology:
        """The fleet's live topology, every page of it, as the simulator takes it."""
        pods: dict[str, Any] = {}
        namespaces: dict[str, dict[str, str]] = {}
        nodes: dict[str, dict[str, str]] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor is not None:
                params["continue"] = cursor
            page = self._get(TopologyPageView, "/v1/topology", params=params)
            namespaces, nodes = page.namespaces, page.nodes
            for endpoint in page.endpoints:
                pods[f"{endpoint.namespace}/{endpoint.name}"] = {
                    "labels": endpoint.labels,
                    "ip": endpoint.ip,
                    "node": endpoint.node,
                    "ports": [port.model_dump(mode="json") for port in endpoint.ports],
                }
            cursor = page.continue_
            if not cursor:
                return Topology.model_validate(
                    {"namespaces": namespaces, "pods": pods, "nodes": nodes}
                )

    # -- artifacts and checks

    def artifacts(self) -> list[ArtifactView]:
        return self._get_list(ArtifactView, "/v1/artifacts")

    def push_artifact(self, object_bytes: bytes, manifest: bytes, signature: bytes) -> ArtifactView:
        files = {"object": object_bytes, "manifest": manifest, "signature": signature}
        return ArtifactView.model_validate(self._json("POST", "/v1/artifacts", files=files))

    def validate(self, spec: BpfProgramSpec) -> ValidateResult:
        body = {"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
        return ValidateResult.model_validate(self._json("POST", "/v1/validate", json=body))

    def preflight(self, request: PreflightRequest) -> PreflightResult:
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        return PreflightResult.model_validate(self._json("POST", "/v1/preflight", json=body))

    # -- GitSources (as their operators report them)

    def gitsources(self) -> list[GitSourceView]:
        return self._get_list(GitSourceView, "/v1/gitsources")

    def gitsource(self, namespace: str, name: str) -> GitSourceDetail:
        return self._get(GitSourceDetail, _path("v1", "gitsources", namespace, name))

    def reconcile_gitsource(self, namespace: str, name: str) -> GitSourceView:
        """Ask the source's operator for a pass now; the view carries the request's time
        (``reconcile_requested_at``), which the pass reported next comes after."""
        path = _path("v1", "gitsources", namespace, name, "reconcile")
        return self._parsed(TypeAdapter(GitSourceView), "POST", path, self._json("POST", path))

    # -- proposals (changes the operator writes to Git) and shared drafts

    def propose(self, request: ProposalRequest) -> ProposalDetail:
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        return ProposalDetail.model_validate(self._json("POST", "/v1/proposals", json=body))

    def proposals(
        self, source: str | None = None, states: tuple[str, ...] = ()
    ) -> list[ProposalView]:
        params: list[tuple[str, str]] = [("source", source)] if source else []
        params += [("state", state) for state in states]
        return self._get_list(ProposalView, "/v1/proposals", params=params)

    def proposal(self, proposal: int) -> ProposalDetail:
        return self._get(ProposalDetail, _path("v1", "proposals", str(proposal)))

    def merge_proposal(self, proposal: int) -> ProposalView:
        path = _path("v1", "proposals", str(proposal), "merge")
        return ProposalView.model_validate(self._json("POST", path))

    def share_draft(self, draft: SharedDraft) -> SharedDraftView:
        body = draft.model_dump(mode="json", by_alias=True, exclude_none=True)
        return SharedDraftView.model_validate(self._json("POST", "/v1/drafts", json=body))

    def draft(self, draft: str) -> SharedDraftView:
        return self._get(SharedDraftView, _path("v1", "drafts", draft))

    # -- transport

    def _get(self, model: type[Model], path: str, **kwargs: Any) -> Model:
        return self._parsed(TypeAdapter(model), "GET", path, self._json("GET", path, **kwargs))

    def _get_list(self, model: type[Model], path: str, **kwargs: Any) -> list[Model]:
        adapter: TypeAdapter[list[Model]] = TypeAdapter(list[model])  # type: ignore[valid-type]
        return self._parsed(adapter, "GET", path, self._json("GET", path, **kwargs))

    def _parsed(self, adapter: TypeAdapter[Parsed], method: str, path: str, body: Any) -> Parsed:
        try:
            return adapter.validate_python(body)
        except ValidationError as error:
            raise failures.PermanentFailure(
                f"{method} {path}: the API's answer is not what this command reads "
                f"({error.error_count()} problem(s), first: {error.errors()[0]['msg']}); "
                "is the API another version?"
            ) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise failures.TemporaryFailure(
                f"the fleet API at {self.url} did not answer {method} {path} in time"
            ) from None
        except httpx.HTTPError as error:
            raise failures.TemporaryFailure(
                f"the fleet API at {self.url} is unreachable: {error}"
            ) from None
        if response.status_code == 204:
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise failures.PermanentFailure(
                    f"{method} {path}: the answer is not JSON; is {self.url} the fleet API?"
                ) from None
        detail, problems = _problem(response)
        message = f"{detail} ({response.status_code} {method} {path})"
        if response.status_code == 404 and detail == "Not Found":
            raise MissingRoute(
                f"the fleet API at {self.url} has no route {method} {path}",
                status=404,
            )
        if response.status_code == 401:
            message += "; log in again ('bpfleet login') or set BPFLEET_TOKEN"
        failure = failures.for_status(response.status_code, message, problems)
        raise failure if failure is not None else failures.PermanentFailure(message)


def _problem(response: httpx.Response) -> tuple[str, list[str]]:
    """The API's ``detail`` (and ``problems``), or FastAPI's validation errors."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text[:200].split()) or response.reason_phrase, []
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        problems = [
            f"{'.'.join(str(part) for part in item.get('loc', ())[1:])}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        return "; ".join(problems), problems
    problems = body.get("problems", []) if isinstance(body, dict) else []
    text = str(detail or body)
    if problems:
        text += ": " + "; ".join(str(problem) for problem in problems)
    return text, [str(problem) for problem in problems]
