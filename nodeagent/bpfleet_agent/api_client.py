"""The agent's side of the fleet API; the only agent module that speaks HTTP.

- ``ApiClient``: one method per call of the agent protocol (``bpfleet_core.protocol``),
  every failure raised as ``ApiError`` classified temporary, permanent, unauthorized
  or not found, because each asks for a different reaction.
- ``NodeCredential``: the node token, kept 0600 in the state directory, obtained with
  the bootstrap token and renewed once when the API rejects it.
- ``FleetLink``: two background threads and the artifact download. The watcher
  long-polls for assignments and writes each new revision to the assignments file
  before waking the reconcile loop; the reporter sends status, heartbeats, feature
  reports and the node's endpoints. Neither ever raises: the reconcile loop works from
  the files, so a node keeps its programs while the API is unreachable, and across
  restarts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ValidationError

from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, files
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    EndpointSet,
    Heartbeat,
    NodeReport,
    ProgramState,
    Registration,
    RegistrationResult,
)
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)

ArtifactPart = Literal["object", "manifest", "signature"]

# Objects are tens of kilobytes; a bound keeps a broken or hostile server from filling
# the disk of every node at once.
MAX_ARTIFACT_BYTES = 64 << 20
REQUEST_TIMEOUT = 10.0
# Time the API gets beyond the long-poll wait before the request counts as hung.
LONG_POLL_GRACE = 10.0
BACKOFF_CAP = 10.0
# An artifact the API refused (unknown digest, wrong bytes) is asked for again this late.
REFUSED_RETRY = 60.0
# Jitter needs no secrecy, but SystemRandom needs no seeding either.
_JITTER = random.SystemRandom()


# --------------------------------------------------------------------------- errors


class Failure(StrEnum):
    TEMPORARY = "temporary"  # connection errors, timeouts, 5xx, 429: retry with backoff
    UNAUTHORIZED = "unauthorized"  # 401: the credential is unknown or revoked
    NOT_FOUND = "not found"  # 404: the thing (or the route: a wrong API URL) is not there
    PERMANENT = "permanent"  # other 4xx, unreadable answers: the same request fails again


def classify_status(status: int) -> Failure | None:
    """What an HTTP status means for the agent; None for success."""
    if 200 <= status < 300:
        return None
    if status == 401:
        return Failure.UNAUTHORIZED
    if status == 404:
        return Failure.NOT_FOUND
    if status == 429 or status >= 500:
        return Failure.TEMPORARY
    # Other 4xx, and 1xx/3xx this client never asked for (it follows no redirects).
    return Failure.PERMANENT


class ApiError(Exception):
    def __init__(self, failure: Failure, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.status = status

    @property
    def temporary(self) -> bool:
        return self.failure is Failure.TEMPORARY


def _detail(response: httpx.Response) -> str:
    """The API's own explanation (FastAPI's ``detail``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    detail = body.get("detail") if isinstance(body, dict) else None
    return json.dumps(detail)[:300] if detail is not None else json.dumps(body)[:200]


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


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ReceivedAssignments:
    """An assignments answer, read only as far as the agent needs to store it.

    Programs stay raw so that the reconcile loop judges each on its own: one entry
    this agent cannot read must not hide the others."""

    node: str
    revision: int
    document: dict[str, Any]

    @classmethod
    def from_document(cls, document: object) -> ReceivedAssignments:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        revision, node = document.get("revision"), document.get("node")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError(f"revision {revision!r} is not a non-negative integer")
        if not isinstance(node, str):
            raise ValueError("no node name")
        if not isinstance(document.get("programs", []), list):
            raise ValueError("'programs' is not a list")
        return cls(node=node, revision=revision, document=document)


def save_assignments(path: Path, received: ReceivedAssignments) -> None:
    files.write_atomically(path, json.dumps(received.document, indent=2, sort_keys=True))


def cached_revision(path: Path) -> int:
    """The revision of the stored assignments; 0 (ask for everything) when unreadable."""
    try:
        return ReceivedAssignments.from_document(json.loads(path.read_bytes())).revision
    except (OSError, ValueError):
        return 0


# --------------------------------------------------------------------------- HTTP


def _body(message: BaseModel) -> bytes:
    return message.model_dump_json(by_alias=True).encode()


class ApiClient:
    """Synchronous calls to the fleet API. One per thread: a long-poll holds its
    connection for up to ``wait`` seconds, and must not queue the other calls."""

    def __init__(
        self, base_url: str, *, ca: Path | None = None, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca)) if ca is not None else True
        )
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            verify=verify,
            headers={"User-Agent": "bpfleet-agent"},
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
            raise ApiError(
                Failure.TEMPORARY, f"{method} {path}: {type(error).__name__}: {error}"
            ) from error
        failure = classify_status(response.status_code)
        if failure is not None:
            raise ApiError(
                failure,
                f"{method} {path}: HTTP {response.status_code}: {_detail(response)}",
                response.status_code,
            )
        return response

    def register(self, bootstrap_token: str, registration: Registration) -> RegistrationResult:
        response = self._request(
            "POST", "/v1/agent/register", bootstrap_token, content=_body(registration)
        )
        try:
            return RegistrationResult.model_validate_json(response.content)
        except ValidationError as error:
            raise ApiError(Failure.PERMANENT, f"unreadable registration answer: {error}") from error

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
            return ReceivedAssignments.from_document(response.json())
        except ValueError as error:
            raise ApiError(Failure.PERMANENT, f"unreadable assignments: {error}") from error

    def report_status(self, token: str, report: NodeReport) -> None:
        self._request("POST", "/v1/agent/status", token, content=_body(report))

    def heartbeat(self, token: str, heartbeat: Heartbeat) -> None:
        self._request("POST", "/v1/agent/heartbeat", token, content=_body(heartbeat))

    def report_features(self, token: str, report: FeatureReport) -> None:
        self._request("PUT", "/v1/agent/features", token, content=_body(report))

    def declare_endpoints(self, token: str, declared: EndpointSet) -> None:
        self._request("PUT", "/v1/agent/endpoints", token, content=_body(declared))

    def download(self, token: str, digest: str, part: ArtifactPart, destination: Path) -> None:
        """Stream one file of an artifact to ``destination``."""
        path = f"/v1/artifacts/{digest}/{part}"
        try:
            with self._http.stream(
                "GET", path, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                failure = classify_status(response.status_code)
                if failure is not None:
                    response.read()
                    raise ApiError(
                        failure,
                        f"GET {path}: HTTP {response.status_code}: {_detail(response)}",
                        response.status_code,
                    )
                written = 0
                with destination.open("wb") as stream:
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > MAX_ARTIFACT_BYTES:
                            raise ApiError(
                                Failure.PERMANENT,
                                f"GET {path}: larger than {MAX_ARTIFACT_BYTES} bytes",
                            )
                        stream.write(chunk)
        except httpx.HTTPError as error:
            raise ApiError(
                Failure.TEMPORARY, f"GET {path}: {type(error).__name__}: {error}"
            ) from error


# --------------------------------------------------------------------------- credential


class NodeCredential:
    """This node's token. Thread-safe: both background threads and the artifact
    download use it, and only one of them may register at a time.

    A rejected token (401) is dropped and the node registers again with the bootstrap
    token, but once only: if the token just issued is rejected too, registering again
    would only add nodes to the API, so the agent keeps its token, backs off and says so.
    """

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        api_url: str,
        bootstrap_token: str | None,
        registration: Callable[[], Registration],
        on_registered: Callable[[Registration], None] = lambda _registration: None,
    ) -> None:
        self.path = path
        self.node = node
        self.api_url = api_url
        self._bootstrap_token = bootstrap_token
        self._registration = registration
        self._on_registered = on_registered
        self._lock = threading.Lock()
        self._renewed_unconfirmed = False
        self._token = self._load()
        self.registrations = 0

    def _load(self) -> str | None:
        try:
            stored = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable node credential %s: %s", self.path, error)
            return None
        if not isinstance(stored, dict) or not isinstance(stored.get("token"), str):
            log.warning("ignoring node credential %s: no token in it", self.path)
            return None
        # A token belongs to one node name at one API; with either changed it is useless.
        if stored.get("node") != self.node or stored.get("apiUrl") != self.api_url:
            log.warning(
                "node credential %s is for node %r at %s, not %r at %s; registering anew",
                self.path,
                stored.get("node"),
                stored.get("apiUrl"),
                self.node,
                self.api_url,
            )
            return None
        return str(stored["token"])

    def current(self) -> str | None:
        with self._lock:
            return self._token

    def ensure(self, client: ApiClient) -> str:
        """The token, registering first when there is none; raises ``ApiError``."""
        with self._lock:
            if self._token is not None:
                return self._token
            if self._bootstrap_token is None:
                raise ApiError(
                    Failure.PERMANENT,
                    f"no node credential in {self.path} and no BPFLEET_AGENT_BOOTSTRAP_TOKEN "
                    "to register with",
                )
            registration = self._registration()
            try:
                result = client.register(self._bootstrap_token, registration)
            except ApiError as error:
                if error.failure is Failure.UNAUTHORIZED:
                    # Not this node's credential: dropping it would change nothing.
                    raise ApiError(
                        Failure.PERMANENT,
                        f"the API rejected the bootstrap token: {error}",
                        error.status,
                    ) from error
                raise
            document = {"node": self.node, "apiUrl": self.api_url, "token": result.token}
            files.write_atomically(self.path, json.dumps(document), mode=0o600)
            self._token = result.token
            self.registrations += 1
            log.info("registered node %s with the fleet API at %s", self.node, self.api_url)
            self._on_registered(registration)
            return result.token

    def rejected(self, token: str) -> bool:
        """The API answered 401 to ``token``; True when the next ``ensure`` registers."""
        with self._lock:
            if token != self._token:
                return self._token is None  # someone renewed (or dropped) it already
            if self._bootstrap_token is None:
                log.error(
                    "the fleet API rejects this node's credential (%s) and there is no "
                    "bootstrap token to register again with",
                    self.path,
                )
                return False
            if self._renewed_unconfirmed:
                log.error(
                    "the fleet API rejects the credential it issued just now; not "
                    "registering again (is this node name taken or revoked?)"
                )
                return False
            log.warning(
                "the fleet API rejects this node's credential; registering again with the "
                "bootstrap token"
            )
            self._token = None
            self._renewed_unconfirmed = True
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return True

    def confirmed(self) -> None:
        """A call with the current token succeeded: a later 401 may renew it again."""
        with self._lock:
            self._renewed_unconfirmed = False


# --------------------------------------------------------------------------- link


@dataclass(frozen=True)
class ArtifactProblem:
    """Why an assignment's artifact is not in the cache, as the program's state."""

    state: ProgramState
    reason: str
    message: str


def _report_fingerprint(report: NodeReport) -> str:
    """A report without what changes on every reconcile (times, run counters), so an
    unchanged node is not re-reported every few seconds."""
    return report.model_dump_json(
        exclude={
            "reported_at": True,
            "programs": {"__all__": {"updated_at": True, "stats": True, "maps": True}},
            "policy": {"updated_at": True, "allowed": True, "denied": True, "audit_denied": True},
        }
    )


class FleetLink:
    """The agent's connection to the fleet API, for the reconcile loop in ``daemon``.

    Threads: the watcher (long-poll -> assignments file -> ``wake``) and the reporter
    (status, heartbeats, features, endpoints). The reconcile loop calls ``submit``,
    ``features_probed``, ``endpoints_declared`` and ``fetch_artifact`` (the last on its
    own HTTP client).
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        features: Callable[[], FeatureReport],
        wake: threading.Event,
    ) -> None:
        assert settings.api_url is not None
        self.settings = settings
        self.api_url = settings.api_url
        self._features = features
        self._wake = wake
        self._stop = threading.Event()
        self._report_ready = threading.Event()
        self._lock = threading.Lock()
        self._pending_report: NodeReport | None = None
        self._pending_features: FeatureReport | None = None
        # The endpoints the loop declared last, and whether the API has them yet.
        self._declared: EndpointSet | None = None
        self._declared_pending = False
        self._applied_revision = 0
        # Watcher thread only: the revision to resume after, and registrations seen.
        self._after = 0
        self._registrations_seen = 0
        # Reporter thread only: when the next heartbeat is due, and what was last sent.
        self._next_heartbeat = 0.0
        self._last_sent: tuple[str, float] | None = None
        self._declared_registrations = 0
        self.credential = NodeCredential(
            settings.credential_file,
            node=settings.node_name,
            api_url=settings.api_url,
            bootstrap_token=(
                settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
            ),
            registration=self._registration,
            on_registered=self._registered,
        )
        # Reconcile-loop thread only: downloads, their backoff while the API is away,
        # and digests the API refused (asked again only after REFUSED_RETRY seconds).
        self._downloads = self._client()
        self._download_backoff = Backoff()
        self._downloads_resume_at = 0.0
        self._refused: dict[str, tuple[float, ArtifactProblem]] = {}
        self._watcher = threading.Thread(
            target=self._watch, name="bpfleet-assignments", daemon=True
        )
        self._reporter = threading.Thread(target=self._report, name="bpfleet-reporter", daemon=True)

    def _client(self) -> ApiClient:
        return ApiClient(self.api_url, ca=self.settings.api_ca)

    def _registration(self) -> Registration:
        return Registration(
            node=self.settings.node_name, labels=self.settings.labels, features=self._features()
        )

    def _registered(self, registration: Registration) -> None:
        # The registration carried the feature report: the API has it now.
        self._mark_features_reported(registration.features)

    # ------------------------------------------------------------ for the reconcile loop

    def start(self) -> None:
        self._watcher.start()
        self._reporter.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads; the reporter sends the last report first if it can.

        The watcher is not waited for: it may sit in a long-poll for half a minute, has
        nothing to finish, and writes nothing once stopped (a daemon thread, it does not
        hold the process either)."""
        self._stop.set()
        self._report_ready.set()
        if self._reporter.is_alive():
            self._reporter.join(timeout)
        self._downloads.close()

    def submit(self, report: NodeReport) -> None:
        """Hand over the report of a reconcile; only the latest unsent one matters."""
        with self._lock:
            self._pending_report = report
            self._applied_revision = report.revision
        self._report_ready.set()

    def endpoints_declared(self, declared: EndpointSet) -> None:
        """Send this node's endpoints (again after a new registration: the API may be
        one that never heard of this node)."""
        with self._lock:
            if declared == self._declared and not self._declared_pending:
                return
            self._declared, self._declared_pending = declared, True
        self._report_ready.set()

    def features_probed(self, report: FeatureReport) -> None:
        """Send this feature report unless the API already acknowledged it."""
        if self._reported_probe_time() == report.probed_at.isoformat():
            return
        with self._lock:
            self._pending_features = report
        self._report_ready.set()

    def fetch_artifact(self, ref: ArtifactRef) -> ArtifactProblem | None:
        """Download the artifact ``ref`` pins by digest into the cache, as
        ``<cache>/<name>/<version>/``; None once it is there. Only the object's digest is
        checked here: signatures are the loader's to verify, never the API's word."""
        assert ref.digest is not None
        label = f"{ref.name}@{ref.version} (sha256 {ref.digest[:12]}…)"
        refused_until, problem = self._refused.get(ref.digest, (0.0, None))
        if problem is not None and time.monotonic() < refused_until:
            return problem
        wait = self._downloads_resume_at - time.monotonic()
        if wait > 0:
            return ArtifactProblem(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"cannot download {label} from the fleet API yet; next try in {wait:.1f}s",
            )
        token = self.credential.current()
        if token is None:
            return ArtifactProblem(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"not registered with the fleet API yet; {label} will be downloaded then",
            )
        cache = self.settings.artifact_cache
        incoming = cache / f".incoming-{uuid.uuid4().hex}"
        try:
            incoming.mkdir(parents=True)
            files = artifacts.ArtifactFiles.in_directory(incoming, ref.name)
            parts: tuple[tuple[ArtifactPart, Path], ...] = (
                ("object", files.object),
                ("manifest", files.manifest),
                ("signature", files.signature),
            )
            for part, destination in parts:
                self._downloads.download(token, ref.digest, part, destination)
            actual = artifacts.sha256_file(files.object)
            if actual != ref.digest:
                log.error("the fleet API served %s with sha256 %s; discarded", label, actual)
                return self._refuse(
                    ref.digest,
                    ArtifactProblem(
                        ProgramState.SIGNATURE_REJECTED,
                        artifacts.RejectionReason.DIGEST_MISMATCH.value,
                        f"the fleet API served an object with sha256 {actual[:12]}… for "
                        f"{label}; not used",
                    ),
                )
            _move_into_place(incoming, cache / ref.name / ref.version)
        except ApiError as error:
            return self._download_failed(token, ref.digest, label, error)
        except OSError as error:
            log.error("cannot cache %s in %s: %s", label, cache, error)
            return ArtifactProblem(
                ProgramState.LOAD_FAILED,
                "ArtifactCacheError",
                f"cannot store {label} in {cache}: {error}",
            )
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self.credential.confirmed()
        self._download_backoff.reset()
        self._refused.pop(ref.digest, None)
        log.info("downloaded %s into %s", label, cache)
        return None

    def _refuse(self, digest: str, problem: ArtifactProblem) -> ArtifactProblem:
        """Remember an answer that asking again at once would not change."""
        self._refused[digest] = (time.monotonic() + REFUSED_RETRY, problem)
        return problem

    def _download_failed(
        self, token: str, digest: str, label: str, error: ApiError
    ) -> ArtifactProblem:
        if error.failure is Failure.NOT_FOUND:
            log.error("the fleet API has no artifact %s: %s", label, error)
            return self._refuse(
                digest,
                ArtifactProblem(
                    ProgramState.LOAD_FAILED,
                    artifacts.RejectionReason.NOT_FOUND.value,
                    f"the fleet API has no artifact {label}",
                ),
            )
        if error.failure is Failure.PERMANENT:
            log.error("downloading %s failed for good: %s", label, error)
            return self._refuse(
                digest,
                ArtifactProblem(
                    ProgramState.LOAD_FAILED,
                    "ArtifactDownloadFailed",
                    f"downloading {label} failed: {error}",
                ),
            )
        if error.failure is Failure.UNAUTHORIZED:
            self.credential.rejected(token)
        delay = self._download_backoff.next_delay()
        self._downloads_resume_at = time.monotonic() + delay
        log.warning("downloading %s failed (%s); retrying in %.1fs", label, error, delay)
        return ArtifactProblem(
            ProgramState.PENDING,
            "ArtifactDownloadRetrying",
            f"downloading {label} failed ({error}); retrying",
        )

    # ------------------------------------------------------------ shared by both threads

    def _after_failure(
        self, what: str, error: ApiError, backoff: Backoff, token: str | None
    ) -> float:
        """Log a failed call and return how long to wait before the next try."""
        if (
            error.failure is Failure.UNAUTHORIZED
            and token is not None
            and self.credential.rejected(token)
        ):
            return 0.0  # register at once, with the bootstrap token
        if error.temporary:
            delay = backoff.next_delay()
            # The first failure of an outage is news; its repetitions are not.
            level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
            log.log(
                level,
                "%s: fleet API unavailable (%s); retrying in %.1fs, meanwhile reconciling "
                "the cached assignments",
                what,
                error,
                delay,
            )
            return delay
        # Permanent: the same call would fail again at once, so wait the longest delay.
        backoff.failures += 1
        hint = (
            " (is BPFLEET_AGENT_API_URL the API's base URL?)"
            if error.failure is Failure.NOT_FOUND
            else ""
        )
        log.error(
            "%s failed (%s): %s%s; next try in %.0fs", what, error.failure, error, hint, backoff.cap
        )
        return backoff.cap

    def _recovered(self, what: str, backoff: Backoff) -> None:
        self.credential.confirmed()
        if backoff.failures:
            log.info("%s: fleet API answering again after %d failed tries", what, backoff.failures)
        backoff.reset()

    # ------------------------------------------------------------ watcher thread

    def _watch(self) -> None:
        client = self._client()
        backoff = Backoff()
        self._after = cached_revision(self.settings.assignments_file)
        self._registrations_seen = self.credential.registrations
        try:
            while not self._stop.is_set():
                try:
                    delay = self._watch_once(client, backoff)
                except Exception:
                    # A bug, not the network; the loop goes on, and so does reconciling.
                    log.exception("unexpected error following assignments")
                    delay = backoff.cap
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            client.close()

    def _watch_once(self, client: ApiClient, backoff: Backoff) -> float:
        """One long-poll; returns how long to wait before the next."""
        token: str | None = None
        asked_at = time.monotonic()
        try:
            token = self.credential.ensure(client)
            if self.credential.registrations != self._registrations_seen:
                # A new registration may be a new node to the API (its database was
                # reset, say): ask for everything, not for what follows our revision.
                self._registrations_seen = self.credential.registrations
                self._after = 0
            received = client.assignments(
                token, after=self._after, wait=self.settings.long_poll_wait
            )
        except ApiError as error:
            return self._after_failure("following assignments", error, backoff, token)
        self._recovered("following assignments", backoff)
        if self._stop.is_set():
            return 0.0
        if received is None:
            # An API that answers "nothing new" at once would make this loop spin.
            return 1.0 if time.monotonic() - asked_at < 1.0 else 0.0
        if not self._accept(received, self._after):
            return backoff.cap
        self._after = received.revision
        self._wake.set()
        return 0.0

    def _accept(self, received: ReceivedAssignments, after: int) -> bool:
        if received.node != self.settings.node_name:
            log.error(
                "the fleet API sent assignments for node %r to node %r; ignored",
                received.node,
                self.settings.node_name,
            )
            return False
        if received.revision <= after and after != 0:
            log.warning("ignoring assignments revision %d, not after %d", received.revision, after)
            return False
        try:
            save_assignments(self.settings.assignments_file, received)
        except OSError as error:
            log.error("cannot store assignments in %s: %s", self.settings.assignments_file, error)
            return False
        log.info("assignments revision %d received", received.revision)
        return True

    # ------------------------------------------------------------ reporter thread

    def _report(self) -> None:
        client = self._client()
        backoff = Backoff()
        try:
            while True:
                stopping = self._stop.is_set()
                # Cleared before the round, so a report submitted during it is not missed.
                self._report_ready.clear()
                try:
                    delay = self._report_round(client, backoff, stopping)
                except Exception:
                    # A bug, not the network; the loop goes on, and so does reconciling.
                    log.exception("unexpected error reporting to the fleet API")
                    delay = backoff.cap
                if stopping:
                    return
                if delay is not None:
                    self._stop.wait(delay)
                    continue
                self._report_ready.wait(max(0.0, self._next_heartbeat - time.monotonic()))
        finally:
            client.close()

    def _report_round(self, client: ApiClient, backoff: Backoff, stopping: bool) -> float | None:
        """Send what is due; after a failure, how long to wait before trying again."""
        token: str | None = None
        try:
            token = self.credential.ensure(client)
            self._send_features(client, token)
            self._send_endpoints(client, token)
            self._send_report(client, token)
            if not stopping and time.monotonic() >= self._next_heartbeat:
                self._next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
                with self._lock:
                    revision = self._applied_revision
                client.heartbeat(token, Heartbeat(revision=revision))
        except ApiError as error:
            if stopping:
                log.warning("the last report did not reach the fleet API: %s", error)
                return None
            return self._after_failure("reporting", error, backoff, token)
        self._recovered("reporting", backoff)
        return None

    def _send_features(self, client: ApiClient, token: str) -> None:
        with self._lock:
            report = self._pending_features
        if report is None:
            return
        try:
            client.report_features(token, report)
        except ApiError as error:
            if error.failure in (Failure.PERMANENT, Failure.NOT_FOUND):
                # Sending the same report again cannot help; the next probe is tried afresh.
                log.error("the fleet API refuses the feature report; dropped")
                with self._lock:
                    if self._pending_features is report:
                        self._pending_features = None
            raise
        self._mark_features_reported(report)
        log.info("feature report for kernel %s sent to the fleet API", report.kernel_release)

    def _send_endpoints(self, client: ApiClient, token: str) -> None:
        with self._lock:
            if self.credential.registrations != self._declared_registrations:
                self._declared_registrations = self.credential.registrations
                self._declared_pending = self._declared is not None
            declared, pending = self._declared, self._declared_pending
        if declared is None or not pending:
            return
        try:
            client.declare_endpoints(token, declared)
        except ApiError as error:
            # 409: another node still holds an endpoint or its IP (it moved here, and
            # that node has not said so yet): worth asking again. Other refusals are not.
            if error.status != 409 and error.failure in (Failure.PERMANENT, Failure.NOT_FOUND):
                log.error("the fleet API refuses this node's endpoints; dropped: %s", error)
                self._endpoints_sent(declared)
            raise
        self._endpoints_sent(declared)
        log.info("%d endpoint(s) declared to the fleet API", len(declared.endpoints))

    def _endpoints_sent(self, declared: EndpointSet) -> None:
        with self._lock:
            if self._declared is declared:
                self._declared_pending = False

    def _send_report(self, client: ApiClient, token: str) -> None:
        with self._lock:
            report = self._pending_report
        if report is None:
            return
        fingerprint = _report_fingerprint(report)
        now = time.monotonic()
        if (
            self._last_sent is not None
            and self._last_sent[0] == fingerprint
            and now - self._last_sent[1] < self.settings.status_refresh_interval
        ):
            return
        try:
            client.report_status(token, report)
        except ApiError as error:
            if error.failure in (Failure.PERMANENT, Failure.NOT_FOUND):
                log.error(
                    "the fleet API refuses the status report of revision %d; dropped",
                    report.revision,
                )
                self._forget_report(report)
            raise
        self._last_sent = (fingerprint, now)
        self._forget_report(report)
        log.debug("status of revision %d sent", report.revision)

    def _forget_report(self, report: NodeReport) -> None:
        with self._lock:
            if self._pending_report is report:
                self._pending_report = None

    # ------------------------------------------------------------ features bookkeeping

    def _reported_probe_time(self) -> str | None:
        try:
            return self.settings.features_reported_file.read_text().strip()
        except OSError:
            return None

    def _mark_features_reported(self, report: FeatureReport) -> None:
        with self._lock:
            if self._pending_features is not None and (
                self._pending_features.probed_at == report.probed_at
            ):
                self._pending_features = None
        try:
            files.write_atomically(
                self.settings.features_reported_file, report.probed_at.isoformat()
            )
        except OSError as error:
            log.warning("cannot record the reported features: %s", error)


def _move_into_place(incoming: Path, directory: Path) -> None:
    """Swap a complete download in for ``directory``, so a reader (or a crash) never
    meets half of one artifact and half of another."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    stale = directory.with_name(f".stale-{directory.name}-{uuid.uuid4().hex}")
    if directory.exists():
        directory.rename(stale)
    incoming.rename(directory)
    shutil.rmtree(stale, ignore_errors=True)
