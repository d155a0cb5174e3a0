"""The agent's HTTP seam to the fleet API; the only agent module that speaks HTTP.

- ``ApiClient``: one method per call of the agent protocol (``bpfleet_core.protocol``).
  Every failure is raised as one of ``bpfleet_core.failures``: temporary (back off and
  retry), or permanent and its kinds (``Unauthorized``, ``NotFound``, ``Conflict``...),
  because each asks for a different reaction.
- ``Backoff``: the delays between retries, with jitter.
- ``ReceivedAssignments``: an assignments answer, read as far as the agent must to
  store it.

The threads that use the client are in ``fleetlink``, the downloads in
``artifact_cache``.
"""

from __future__ import annotations

import json
import math
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pydantic_core
from pydantic import BaseModel, ValidationError

from bpfleet_agent.gcpause import gc_paused
from bpfleet_agent.settings import check_scheme
from bpfleet_core import failures
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    EndpointSet,
    Heartbeat,
    NodeReport,
    Registration,
    RegistrationResult,
)

ArtifactPart = Literal["object", "manifest", "signature"]

# Objects are tens of kilobytes; a bound keeps a broken or hostile server from filling
# the disk of every node at once.
MAX_ARTIFACT_BYTES = 64 << 20
REQUEST_TIMEOUT = 10.0
# Time the API gets beyond the long-poll wait before the request counts as hung.
LONG_POLL_GRACE = 10.0
BACKOFF_CAP = 10.0
KEEP_ALIVE_SECONDS = 120.0
# Jitter needs no secrecy, but SystemRandom needs no seeding either.
_JITTER = random.SystemRandom()


# --------------------------------------------------------------------------- errors


def _detail(response: httpx.Response) -> str:
    """The API's own explanation (FastAPI's ``detail``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    detail = body.get("detail") if isinstance(body, dict) else None
    return json.dumps(detail)[:300] if detail is not None else json.dumps(body)[:200]


def _refused(method: str, path: str, response: httpx.Response) -> failures.Failure | None:
    """The failure the answer stands for; None for success (its body is left unread)."""
    if response.is_success:
        return None
    return failures.for_status(
        response.status_code,
        f"{method} {path}: HTTP {response.status_code}: {_detail(response)}",
    )


# --------------------------------------------------------------------------- backoff


class Backoff:
    """Exponential delays with jitter, capped: after the n-th consecutive failure a
    delay between half and all of ``min(cap, initial * 2**n)``. The jitter keeps a
    fleet that lost the API at the same moment from coming back in lockstep."""

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = BACKOFF_CAP,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._uniform = uniform or _JITTER.uniform

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self._uniform(0.0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


# --------------------------------------------------------------------------- answers

HEARTBEAT_INTERVAL_HEADER = "X-Bpfleet-Heartbeat-Interval"
# Whatever the API says, a node beats at least this often and at most this often.
HEARTBEAT_INTERVAL_BOUNDS = (1.0, 600.0)


def heartbeat_interval(header: str | None) -> float | None:
    """The interval an answer asks for, within ``HEARTBEAT_INTERVAL_BOUNDS``; None when
    the header is missing or not a number."""
    try:
        asked = float(header) if header is not None else None
    except ValueError:
        return None
    if asked is None or not math.isfinite(asked):
        return None
    low, high = HEARTBEAT_INTERVAL_BOUNDS
    return min(max(asked, low), high)


@dataclass(frozen=True)
class ReceivedAssignments:
    """An assignments answer, read only as far as the agent needs to store it.

    Programs stay raw so that the reconcile loop judges each on its own: one entry
    this agent cannot read must not hide the others."""

    node: str
    revision: int
    document: dict[str, Any]
    raw: bytes = b""  # the body as received, stored as it is (no second serialisation)

    @classmethod
    def from_document(cls, document: object, raw: bytes = b"") -> ReceivedAssignments:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        revision, node = document.get("revision"), document.get("node")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError(f"revision {revision!r} is not a non-negative integer")
        if not isinstance(node, str):
            raise ValueError("no node name")
        if not isinstance(document.get("programs", []), list):
            raise ValueError("'programs' is not a list")
        return cls(node=node, revision=revision, document=document, raw=raw)


# --------------------------------------------------------------------------- HTTP


def _body(message: BaseModel) -> bytes:
    return message.model_dump_json(by_alias=True).encode()


class ApiClient:
    """Synchronous calls to the fleet API. One per thread: a long-poll holds its
    connection for up to ``wait`` seconds, and must not queue the other calls.

    ``ca``: the CA bundle that vouches for an https API (the system's when None); plain
    http is refused unless ``allow_insecure_http`` (development)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca: Path | None = None,
        allow_insecure_http: bool = False,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        check_scheme(base_url, allow_insecure_http=allow_insecure_http)
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca)) if ca is not None else True
        )
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            verify=verify,
            headers={"User-Agent": "bpfleet-agent"},
            # Kept across heartbeats (up to a minute apart) rather than a new connection,
            # and a TLS handshake, for each; the API keeps idle ones longer (130 s).
            limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE_SECONDS),
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        content: bytes | None = None,
        params: dict[str, str | int | float] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method,
                path,
                headers=headers,
                content=content,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise failures.TemporaryFailure(
                f"{method} {path}: {type(error).__name__}: {error}"
            ) from error
        failure = _refused(method, path, response)
        if failure is not None:
            raise failure
        return response

    def register(self, bootstrap_token: str, registration: Registration) -> RegistrationResult:
        body = registration.model_dump(mode="json", by_alias=True)
        if registration.node_key is not None:  # a SecretStr dumps as stars
            body["nodeKey"] = registration.node_key.get_secret_value()
        response = self._request(
            "POST", "/v1/agent/register", bootstrap_token, content=json.dumps(body).encode()
        )
        try:
            return RegistrationResult.model_validate_json(response.content)
        except ValidationError as error:
            raise failures.PermanentFailure(f"unreadable registration answer: {error}") from error

    def assignments(self, token: str, *, after: int, wait: float) -> ReceivedAssignments | None:
        """The node's assignments once their revision passes ``after``; None when the
        API waited ``wait`` seconds and nothing changed."""
        response = self._request(
            "GET",
            "/v1/agent/assignments",
            token,
            params={"after": after, "wait": wait},
            timeout=wait + LONG_POLL_GRACE,
        )
        if response.status_code == 204:
            return None
        try:
            # Decoded once, here (a policy part may be a megabyte): the loop gets this
            # document, the assignments file these bytes.
            body = response.content
            with gc_paused():
                document = pydantic_core.from_json(body)
            return ReceivedAssignments.from_document(document, body)
        except (ValueError, RecursionError) as error:
            raise failures.PermanentFailure(f"unreadable assignments: {error}") from error

    def report_status(self, token: str, report: NodeReport) -> None:
        self._request("POST", "/v1/agent/status", token, content=_body(report))

    def heartbeat(self, token: str, heartbeat: Heartbeat) -> float | None:
        """Send a heartbeat; return the interval the API asks for until the next one
        (None: it says nothing, or nothing sensible)."""
        response = self._request("POST", "/v1/agent/heartbeat", token, content=_body(heartbeat))
        return heartbeat_interval(response.headers.get(HEARTBEAT_INTERVAL_HEADER))

    def report_features(self, token: str, report: FeatureReport) -> None:
        self._request("PUT", "/v1/agent/features", token, content=_body(report))

    def declare_endpoints(self, token: str, declared: EndpointSet) -> None:
        self._request("PUT", "/v1/agent/endpoints", token, content=_body(declared))

    def download(
        self, token: str, digest: str, part: ArtifactPart, destination: Path, *, deadline: float
    ) -> None:
        """Stream one file of an artifact to ``destination``, done by ``deadline`` (a
        ``time.monotonic()``) or given up: a read timeout alone would let a server
        sending a byte at a time hold the caller for ever."""
        path = f"/v1/artifacts/{digest}/{part}"

        def past_deadline() -> failures.TemporaryFailure:
            return failures.TemporaryFailure(f"GET {path}: past the download deadline")

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise past_deadline()
        try:
            with self._http.stream(
                "GET",
                path,
                headers={"Authorization": f"Bearer {token}"},
                timeout=min(REQUEST_TIMEOUT, remaining),
            ) as response:
                if not response.is_success:
                    response.read()
                failure = _refused("GET", path, response)
                if failure is not None:
                    raise failure
                written = 0
                with destination.open("wb") as stream:
                    for chunk in response.iter_bytes():
                        if time.monotonic() > deadline:
                            raise past_deadline()
                        written += len(chunk)
                        if written > MAX_ARTIFACT_BYTES:
                            raise failures.PermanentFailure(
                                f"GET {path}: larger than {MAX_ARTIFACT_BYTES} bytes"
                            )
                        stream.write(chunk)
        except httpx.HTTPError as error:
            raise failures.TemporaryFailure(
                f"GET {path}: {type(error).__name__}: {error}"
            ) from error
